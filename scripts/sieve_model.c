/*
 * sieve_model.c - the reads of a sieving load against those of a split
 * load, without MPI: two processes read one file in 32 MiB windows.
 *
 *   halves  each reads its half (the plain read; the aggregation's reads,
 *           before its exchange)
 *   sieve   each reads the whole file and keeps every other 2 KB (the
 *           runs of a column-split tensor on two ranks), the second
 *           process starting halfway and wrapping around, as hfdcp's
 *           sieving reads do
 *   front   the same, both starting at the beginning
 *
 * Build: cc -O2 -o sieve_model scripts/sieve_model.c
 * Use:   sieve_model FILE halves|sieve|front cold|warm
 * "cold" evicts the file from the page cache first (POSIX_FADV_DONTNEED).
 * Each process allocates and touches its buffers, then both start at the
 * same wall-clock time; each prints its time, and for sieve and front
 * also the time of its first half of windows.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WINDOW ((size_t)32 << 20)
#define RUN ((size_t)2048)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int child(const char *path, int mode, int r, size_t size, double go)
{
    size_t nw = (size + WINDOW - 1) / WINDOW, first = 0, count = nw, o = 0;
    int fd = open(path, O_RDONLY);
    char *buf = malloc(WINDOW), *dst = malloc(size / 2 + WINDOW);
    double t0, half = 0;

    if (fd < 0 || buf == NULL || dst == NULL)
        return 1;
    memset(buf, 0, WINDOW);
    memset(dst, 1, size / 2 + WINDOW);
    if (mode == 'h') {
        first = (size_t)r * (nw / 2);
        count = r ? nw - nw / 2 : nw / 2;
    } else if (mode == 's') {
        first = (size_t)r * (nw / 2);
    }
    while (now() < go)
        usleep(1000);
    t0 = now();
    for (size_t i = 0; i < count; i++) {
        size_t w = (first + i) % nw, n = WINDOW;
        off_t lo = (off_t)(w * WINDOW);
        if (i == nw / 2 && mode != 'h')
            half = now() - t0;
        if ((size_t)lo + n > size)
            n = size - (size_t)lo;
        if (pread(fd, buf, n, lo) != (ssize_t)n)
            return 1;
        if (mode == 'h') {
            memcpy(dst + o % (size / 2), buf, n / 2);
            o += n / 2;
        } else {
            for (size_t k = (size_t)r * RUN; k + RUN <= n; k += 2 * RUN) {
                memcpy(dst + o % (size / 2), buf + k, RUN);
                o += RUN;
            }
        }
    }
    printf("  process %d: %.3f s", r, now() - t0);
    if (mode != 'h')
        printf(" (first half %.3f s)", half);
    printf("\n");
    fflush(stdout); /* the caller ends with _exit */
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    int status, bad = 0;

    if (argc != 4 ||
        (argv[2][0] != 'h' && argv[2][0] != 's' && argv[2][0] != 'f')) {
        fprintf(stderr, "usage: %s FILE halves|sieve|front cold|warm\n",
                argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    size_t size = (size_t)lseek(fd, 0, SEEK_END);
    if (strcmp(argv[3], "cold") == 0)
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    double go = now() + 5; /* room for both to set up */
    printf("%s %s:\n", argv[2], argv[3]);
    fflush(stdout);
    for (int r = 0; r < 2; r++)
        if (fork() == 0)
            _exit(child(argv[1], argv[2][0], r, size, go));
    for (int r = 0; r < 2; r++)
        if (wait(&status) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            bad = 1;
    return bad;
}
