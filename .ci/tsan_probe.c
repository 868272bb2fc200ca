/*
 * tsan_probe.c - can ThreadSanitizer run an MPI program here, and do its
 * reports come out?  Built with -fsanitize=thread and run by .ci/test
 * before the ThreadSanitizer pass, under the pass's launcher:
 *   mpiexec -n 2 tsan_probe        no race: must exit 0
 *   mpiexec -n 2 tsan_probe race   a race on purpose: must be reported
 *                                  (exit status 66, "data race")
 * Either failing means TSan is unusable here (its runtime cannot map its
 * shadow memory, the MPI library crashes it, ...): the pass is skipped
 * and says why, rather than passing without having checked anything.
 */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int shared;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int racy;

static void *helper(void *arg)
{
    pthread_mutex_lock(&lock);
    shared++;
    pthread_mutex_unlock(&lock);
    if (arg != NULL)
        racy++;
    return NULL;
}

int main(int argc, char **argv)
{
    int rank, sum = 0, race = argc > 1 && strcmp(argv[1], "race") == 0;
    pthread_t t;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (pthread_create(&t, NULL, helper, race ? &rank : NULL) != 0)
        return 1;
    pthread_mutex_lock(&lock);
    shared++;
    pthread_mutex_unlock(&lock);
    if (race)
        racy++;
    pthread_join(t, NULL);
    MPI_Allreduce(&shared, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
