/*
 * model.c - the generated models shared by `hfdcp demo` and `hfdcp bench`:
 * the Llama-shaped tensor list, how a tensor is split over the ranks, and
 * their sizes on the command line.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

int tool_llama_model(double params, tool_llama_split how, tool_add_tensor_fn add, void *ctx)
{
    bool tp = how == LLAMA_MEGATRON;
    int64_t hidden = 64, vocab, inter, layers;
    char name[96];

    while (hidden < 8192 && 16 * 12.25 * (double)(2 * hidden) * (double)(2 * hidden) <= params)
        hidden *= 2;
    vocab = hidden * 16 < 32000 ? hidden * 16 : 32000;
    inter = hidden * 11 / 4;
    double per_layer = 4.0 * hidden * hidden + 3.0 * hidden * inter + 2.0 * hidden;
    double rest = params - 2.0 * vocab * hidden - hidden;
    layers = rest > per_layer ? (int64_t)(rest / per_layer + 0.5) : 1;

    HFDCP_TRY(add(ctx, "model.embed_tokens.weight", 2, vocab, hidden, SPLIT_ROWS));
    for (int64_t l = 0; l < layers; l++) {
        static const char *const attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "model.layers.%" PRId64 ".self_attn.%s.weight", l, attn[k]);
            HFDCP_TRY(add(ctx, name, 2, hidden, hidden, tp && k < 3 ? SPLIT_ROWS : SPLIT_COLS));
        }
        snprintf(name, sizeof name, "model.layers.%" PRId64 ".mlp.gate_proj.weight", l);
        HFDCP_TRY(add(ctx, name, 2, inter, hidden, tp ? SPLIT_ROWS : SPLIT_BLOCKS));
        snprintf(name, sizeof name, "model.layers.%" PRId64 ".mlp.up_proj.weight", l);
        HFDCP_TRY(add(ctx, name, 2, inter, hidden, tp ? SPLIT_ROWS : SPLIT_BLOCKS));
        snprintf(name, sizeof name, "model.layers.%" PRId64 ".mlp.down_proj.weight", l);
        HFDCP_TRY(add(ctx, name, 2, hidden, inter, SPLIT_COLS));
        snprintf(name, sizeof name, "model.layers.%" PRId64 ".input_layernorm.weight", l);
        HFDCP_TRY(add(ctx, name, 1, hidden, 0, SPLIT_REPLICATED));
        snprintf(name, sizeof name, "model.layers.%" PRId64 ".post_attention_layernorm.weight", l);
        HFDCP_TRY(add(ctx, name, 1, hidden, 0, SPLIT_REPLICATED));
    }
    HFDCP_TRY(add(ctx, "model.norm.weight", 1, hidden, 0, SPLIT_REPLICATED));
    HFDCP_TRY(add(ctx, "lm_head.weight", 2, vocab, hidden, SPLIT_ROWS));
    return HFDCP_OK;
}

void tool_split_range(int64_t len, int n, int k, int64_t *off, int64_t *size)
{
    int64_t base = len / n, extra = len % n;
    *off = k * base + (k < extra ? k : extra);
    *size = base + (k < extra ? 1 : 0);
}

void tool_split_box(int ndim, const int64_t *shape, tool_split split, int rank, int nranks,
                    int64_t *off, int64_t *size)
{
    for (int d = 0; d < ndim; d++) {
        off[d] = 0;
        size[d] = shape[d];
    }
    if (split == SPLIT_REPLICATED)
        return;
    if (ndim == 1 || split == SPLIT_ROWS) {
        tool_split_range(shape[0], nranks, rank, &off[0], &size[0]);
    } else if (split == SPLIT_COLS) {
        tool_split_range(shape[1], nranks, rank, &off[1], &size[1]);
    } else { /* 2-D grid rows x cols = nranks, rows the largest divisor <= sqrt */
        int rows = 1;
        for (int r = 1; r * r <= nranks; r++)
            if (nranks % r == 0)
                rows = r;
        int cols = nranks / rows;
        tool_split_range(shape[0], rows, rank / cols, &off[0], &size[0]);
        tool_split_range(shape[1], cols, rank % cols, &off[1], &size[1]);
    }
}

int tool_parse_size(const char *s, double max, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    switch (toupper((unsigned char)*end)) {
    case 'K': v *= 1e3; end++; break;
    case 'M': v *= 1e6; end++; break;
    case 'G': v *= 1e9; end++; break;
    case 'T': v *= 1e12; end++; break;
    default: break;
    }
    if (*end != '\0' || v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int tool_add_hint(MPI_Info *info, const char *arg)
{
    const char *eq = arg ? strchr(arg, '=') : NULL;
    char key[256];
    if (eq == NULL || eq == arg || (size_t)(eq - arg) >= sizeof key)
        return 0;
    snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
    if (*info == MPI_INFO_NULL)
        MPI_Info_create(info);
    MPI_Info_set(*info, key, eq + 1);
    return 1;
}
