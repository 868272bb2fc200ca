/*
 * lsan_dlclose.c - linked into the test programs and the tool in sanitizer
 * builds only.  Under LeakSanitizer, Open MPI's components must stay mapped
 * at exit: their own allocations are suppressed by module name
 * (.ci/lsan.supp), and a component unloaded by dlclose() would leave
 * "<unknown module>" in the stack instead.  This definition in the
 * executable interposes the C library's dlclose().
 */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
