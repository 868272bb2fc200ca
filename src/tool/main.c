/*
 * main.c - the hfdcp command-line tool: dispatches to subcommands.
 */
#include <stdio.h>
#include <string.h>

#include "hfdcp.h"

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "usage: hfdcp COMMAND ...\n");
    return 2;
}
