#define _GNU_SOURCE
#include "heap_graph.h"

#include <stdlib.h>
#include <string.h>

/* ---- pass: validate --------------------------------------------------------------------------
 * After it: a candidate is accepted, and becomes a hidden edge, when
 *   - its path stands as a field's (path_stands). A field holds its reference in every instance;
 *     a stale word in memory no one wrote since its last use does not, and refcounts cannot
 *     tell them apart when the stale word names an object something unseen owns. So a path
 *     must recur in most instances of the holder's type that hold candidates at all (or the
 *     type has one instance), with two exceptions each way:
 *       - a path that recurs in no other instance stands when it ends in an array of objects
 *         (every word of its block before it is 0 or names one) reached through a field that
 *         leads to a block in most instances, at an object that has exactly one reference
 *         nothing else explains: an owned array's item sits at an index of its own in each
 *         instance. Arrays of integers (an array's dimensions) or of code pointers (a C
 *         callback's struct) are no such array, and a raw pointer that only some instances
 *         aim at someone else's array (a cffi cdata's c_data at cffi's own table of types) is
 *         no such field;
 *       - a path through two heap blocks or more, or to a block's last word, stands only when
 *         it recurs in two instances at least: each hop adds words no one may have written (a
 *         lock's tail that its init left alone: numpy's StringDType met one in the sem_t of its
 *         string allocator's lock), and an allocation's rounding leaves the last word of its
 *         block unwritten (a name's bytes, a 16-byte struct in a 24-byte chunk),
 *   - the holder's traverse does not already visit that referent, and
 *   - the referent still had an unexplained reference for it (direct pointers are weighed
 *     before pointers found deeper).
 * The referent's `unexplained` drops by one per accepted candidate. Self-references are weighed
 * last, by rules of their own (validate_self_references).
 */

static struct type_record *holder_type(const struct graph *graph, const struct candidate *c)
{
    return instance_of(graph, &graph->nodes[c->holder])->type;
}

static int compare_by_type_and_path(const void *left, const void *right, void *context)
{
    const struct graph *graph = context;
    const struct candidate *a = left, *b = right;
    uintptr_t type_a = (uintptr_t)holder_type(graph, a), type_b = (uintptr_t)holder_type(graph, b);
    if (type_a != type_b)
        return (type_a > type_b) - (type_a < type_b);
    if (a->depth != b->depth)
        return a->depth - b->depth;
    int paths = memcmp(a->path, b->path, a->depth * sizeof a->path[0]);
    if (paths)
        return paths;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static bool same_path(const struct candidate *a, const struct candidate *b)
{
    return a->depth == b->depth && !memcmp(a->path, b->path, a->depth * sizeof a->path[0]);
}

/* Whether `some` of a type's `all` holders with candidates are most of them (or all is one). */
static bool most_of(size_t some, size_t all)
{
    return all <= 1 || 2 * some > (all > 64 ? 64 : all);
}

/*
 * Whether a candidate's path is evidence enough of a field (see the pass's rules above): `usual`
 * when it recurs in most holders of its type that hold candidates (or the type has one), in
 * `holders` of them; `usual_field` when the holder's field it starts at leads to a block in most
 * of them.
 */
static bool path_stands(const struct graph *graph, const struct candidate *candidate, bool usual,
                        size_t holders, bool usual_field)
{
    bool recurs = usual && holders >= 2;
    if (candidate->depth > MAX_SINGLE_HOLDER_DEPTH || candidate->last_word)
        return recurs;
    if (usual)
        return true;
    return candidate->depth == 2 && usual_field && candidate->after_objects_only &&
           graph->nodes[candidate->referent].unexplained == 1;
}

/*
 * Counts distinct holders in runs of candidates, in time linear in the run: per node, the
 * number of the last count it took part in (counts are numbered from 1).
 */
struct holder_counter {
    uint32_t *counted_in;
    uint32_t count;
};

static size_t distinct_holders(const struct graph *graph, size_t start, size_t end,
                               struct holder_counter *counter)
{
    size_t holders = 0;
    counter->count++;
    for (size_t i = start; i < end; i++) {
        uint32_t holder = graph->candidates[i].holder;
        holders += counter->counted_in[holder] != counter->count;
        counter->counted_in[holder] = counter->count;
    }
    return holders;
}

/*
 * Marks usual_field[i], for the candidates [start, end) of one type sorted by path, when the
 * field its depth-2 path starts at leads to a block in most of the type's `holders`.
 */
static void mark_usual_fields(const struct graph *graph, size_t start, size_t end, size_t holders,
                              struct holder_counter *counter, bool *usual_field)
{
    for (size_t run = start; run < end;) {
        const struct candidate *first = &graph->candidates[run];
        size_t run_end = run;
        while (run_end < end && graph->candidates[run_end].depth == first->depth &&
               graph->candidates[run_end].path[0] == first->path[0])
            run_end++;
        bool usual =
            first->depth == 2 && most_of(distinct_holders(graph, run, run_end, counter), holders);
        for (size_t i = run; i < run_end; i++)
            usual_field[i] = usual;
        run = run_end;
    }
}

/* Whether the graph has more than one live instance of `type` (holders or not); stops at the
   second, so that a type with many instances costs little. */
static bool several_instances_of(const struct graph *graph, const struct type_record *type)
{
    size_t count = 0;
    for (size_t k = 0; k < graph->ordered_count && count < 2; k++) {
        const struct node *node = &graph->nodes[graph->instance_order[k]];
        count += instance_node_of(graph, node)->record->type == type;
    }
    return count > 1;
}

/* Marks (rejected = true) the candidates whose path does not stand (path_stands). */
static void reject_inconsistent_paths(struct graph *graph, bool *rejected)
{
    struct holder_counter counter = {.counted_in = calloc(graph->node_count + 1, sizeof(uint32_t))};
    bool *usual_field = calloc(graph->candidate_count + 1, sizeof *usual_field);
    if (!counter.counted_in || !usual_field) {
        free(counter.counted_in);
        free(usual_field);
        graph->out_of_memory = true;
        return;
    }
    qsort_r(graph->candidates, graph->candidate_count, sizeof *graph->candidates,
            compare_by_type_and_path, graph);
    for (size_t type_start = 0; type_start < graph->candidate_count;) {
        struct type_record *type = holder_type(graph, &graph->candidates[type_start]);
        size_t type_end = type_start;
        while (type_end < graph->candidate_count &&
               holder_type(graph, &graph->candidates[type_end]) == type)
            type_end++;
        /* Holders of this type with candidates. */
        size_t holders = distinct_holders(graph, type_start, type_end, &counter);
        /* One holder among several instances is no majority for a path into a heap block: the
           instance itself was zeroed when allocated, but a block's words past what its owner
           wrote (glibc hands out a chunk bigger than asked when the rest would be too small to
           keep) can hold a stale pointer that no other instance repeats. */
        bool lone_holder = holders == 1 && several_instances_of(graph, type);
        mark_usual_fields(graph, type_start, type_end, holders, &counter, usual_field);
        for (size_t run = type_start; run < type_end;) {
            size_t run_end = run;
            while (run_end < type_end &&
                   same_path(&graph->candidates[run], &graph->candidates[run_end]))
                run_end++;
            size_t run_holders = distinct_holders(graph, run, run_end, &counter);
            bool usual = most_of(run_holders, holders) &&
                         !(lone_holder && graph->candidates[run].depth >= 2);
            for (size_t i = run; i < run_end; i++)
                rejected[i] =
                    !path_stands(graph, &graph->candidates[i], usual, run_holders, usual_field[i]);
            run = run_end;
        }
        type_start = type_end;
    }
    free(counter.counted_in);
    free(usual_field);
}

/* The order candidates are weighed in: by depth, then holder; self-references last. */
static int compare_candidates(const void *left, const void *right, void *context)
{
    const struct candidate *a = left, *b = right;
    if (a->self_reference != b->self_reference)
        return a->self_reference - b->self_reference;
    if (a->self_reference)
        return compare_by_type_and_path(left, right, context);
    if (a->depth != b->depth)
        return a->depth - b->depth;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static int compare_by_holder(const void *left, const void *right)
{
    const struct candidate *a = left, *b = right;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static void accept_candidate(struct graph *graph, size_t i)
{
    struct candidate *candidate = &graph->candidates[i];
    graph->nodes[candidate->referent].unexplained--;
    candidate->accepted = true;
    add_edge(graph, candidate->holder, candidate->referent, (int32_t)i);
}

/*
 * Weighs the self-references, candidates[first..], after every other candidate (they come sorted
 * by type and path). A pointer to the holder in its own memory is a reference it owns only in a
 * defect (a callback set to the object itself); a design where an object points to itself keeps
 * a borrowed pointer (a trampoline's back-pointer to its Python object). By refcounts alone the
 * two look alike whenever something the graph does not see (a C static, a C++ container) owns
 * the object, so a self-reference is accepted only
 *   - when no holder of the same type with a self-pointer at the same path has its references
 *     all explained without it (that holder is a witness that the field is borrowed), and
 *   - when the holder's self-references explain exactly the references still unexplained: but
 *     for them the holder would be garbage, and
 *   - when no static variable of a loaded object points to the holder (a C static that owns
 *     it). A borrowed back-pointer that passes all three is the last word of an object that
 *     unseen heap memory owns (a C++ container), which the exit analysis rarely meets.
 */
static void validate_self_references(struct graph *graph, size_t first)
{
    size_t kept = first;
    for (size_t run = first; run < graph->candidate_count;) {
        size_t run_end = run;
        bool witnessed = false;
        while (run_end < graph->candidate_count &&
               holder_type(graph, &graph->candidates[run_end]) ==
                   holder_type(graph, &graph->candidates[run]) &&
               same_path(&graph->candidates[run], &graph->candidates[run_end])) {
            witnessed |= graph->nodes[graph->candidates[run_end].holder].unexplained <= 0;
            run_end++;
        }
        for (size_t i = run; i < run_end && !witnessed; i++)
            graph->candidates[kept++] = graph->candidates[i];
        run = run_end;
    }
    graph->candidate_count = kept;
    /* Per holder (sorted by node index, which is no address order), whether its self-references
       explain exactly what is left; then one look through static data for them all. */
    qsort(graph->candidates + first, kept - first, sizeof *graph->candidates, compare_by_holder);
    size_t holders = 0;
    uintptr_t *addresses = malloc((kept - first + 1) * sizeof *addresses);
    bool *owned_by_static = calloc(kept - first + 1, sizeof *owned_by_static);
    if (!addresses || !owned_by_static) {
        graph->out_of_memory = true;
        goto done;
    }
    for (size_t group = first; group < kept;) {
        size_t group_end = group;
        uint32_t holder = graph->candidates[group].holder;
        while (group_end < kept && graph->candidates[group_end].holder == holder)
            group_end++;
        if (graph->nodes[holder].unexplained == (int32_t)(group_end - group))
            addresses[holders++] = (uintptr_t)graph->nodes[holder].object;
        group = group_end;
    }
    qsort(addresses, holders, sizeof *addresses, compare_addresses);
    memory_map_find_in_static_data(graph->memory, addresses, holders, owned_by_static);
    for (size_t i = first; i < kept; i++) {
        uintptr_t object = (uintptr_t)graph->nodes[graph->candidates[i].holder].object;
        const uintptr_t *at =
            bsearch(&object, addresses, holders, sizeof *addresses, compare_addresses);
        if (at && !owned_by_static[at - addresses])
            accept_candidate(graph, i);
    }
done:
    free(addresses);
    free(owned_by_static);
}

/*
 * True, consuming it, when the holder's traverse visited the referent once more than used.
 * `account` appended the visible edges grouped by source, in node order: binary search.
 */
static bool visible_edge_consumed(struct graph *graph, size_t visible_edges, uint32_t holder,
                                  uint32_t referent)
{
    size_t low = 0, high = visible_edges;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (graph->edges[middle].from < holder)
            low = middle + 1;
        else
            high = middle;
    }
    for (size_t e = low; e < visible_edges && graph->edges[e].from == holder; e++) {
        struct edge *edge = &graph->edges[e];
        if (edge->to == referent && edge->hidden == -1) {
            edge->hidden = -2; /* consumed: still a visible edge, matched to one pointer */
            return true;
        }
    }
    return false;
}

void validate_candidates(struct graph *graph)
{
    bool *rejected = calloc(graph->candidate_count + 1, sizeof *rejected);
    if (!rejected) {
        graph->out_of_memory = true;
        return;
    }
    reject_inconsistent_paths(graph, rejected);
    size_t kept = 0;
    for (size_t i = 0; i < graph->candidate_count; i++)
        if (!rejected[i])
            graph->candidates[kept++] = graph->candidates[i];
    graph->candidate_count = kept;
    free(rejected);
    qsort_r(graph->candidates, graph->candidate_count, sizeof *graph->candidates,
            compare_candidates, graph);
    size_t visible_edges = graph->visible_edge_count, consumed = 0, i = 0;
    for (; i < graph->candidate_count && !graph->candidates[i].self_reference; i++) {
        struct candidate *candidate = &graph->candidates[i];
        struct node *holder = &graph->nodes[candidate->holder];
        if (holder->traversed && Py_TYPE(holder->object)->tp_traverse &&
            visible_edge_consumed(graph, visible_edges, candidate->holder, candidate->referent)) {
            consumed++;
            continue;
        }
        if (graph->nodes[candidate->referent].unexplained > 0)
            accept_candidate(graph, i);
    }
    for (size_t e = 0; consumed && e < visible_edges; e++)
        if (graph->edges[e].hidden == -2)
            graph->edges[e].hidden = -1;
    validate_self_references(graph, i);
}

/* ---- pass: reach -----------------------------------------------------------------------------
 * After it: a node is `reached` when a path of visible or hidden edges leads to it from a node
 * with unexplained references left (a reference from outside the graph: a root). The others are
 * garbage that only hidden references keep alive. Only the holders of hidden edges and what they
 * lead to are ever asked, so without a hidden edge the pass does nothing.
 */

/* Groups the edge indexes by source node (first_out, adjacency), in edge order. */
static bool build_adjacency(struct graph *graph)
{
    graph->first_out = calloc(graph->node_count + 1, sizeof *graph->first_out);
    graph->adjacency = malloc((graph->edge_count + 1) * sizeof *graph->adjacency);
    if (!graph->first_out || !graph->adjacency)
        return false;
    for (size_t e = 0; e < graph->edge_count; e++)
        graph->first_out[graph->edges[e].from]++;
    for (size_t i = 1; i < graph->node_count; i++)
        graph->first_out[i] += graph->first_out[i - 1];
    /* first_out[i] is now the end of node i's edges; placing them from the last one down leaves
       it at their start. */
    for (size_t e = graph->edge_count; e-- > 0;)
        graph->adjacency[--graph->first_out[graph->edges[e].from]] = (uint32_t)e;
    graph->first_out[graph->node_count] = (uint32_t)graph->edge_count;
    return true;
}

bool reach_from_roots(struct graph *graph)
{
    if (graph->edge_count == graph->visible_edge_count)
        return true; /* no hidden edge */
    if (!build_adjacency(graph))
        return false;
    uint32_t *queue = malloc((graph->node_count + 1) * sizeof *queue);
    if (!queue) {
        for (size_t i = 0; i < graph->node_count; i++)
            graph->nodes[i].reached = true; /* cannot tell: claim no leak */
        return true;
    }
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < graph->node_count; i++)
        if (graph->nodes[i].unexplained > 0) {
            graph->nodes[i].reached = true;
            queue[tail++] = (uint32_t)i;
        }
    while (head < tail) {
        uint32_t from = queue[head++];
        for (uint32_t k = graph->first_out[from]; k < graph->first_out[from + 1]; k++) {
            uint32_t to = graph->edges[graph->adjacency[k]].to;
            if (!graph->nodes[to].reached) {
                graph->nodes[to].reached = true;
                queue[tail++] = to;
            }
        }
    }
    free(queue);
    return true;
}
