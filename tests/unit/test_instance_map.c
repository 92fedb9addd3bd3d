/*
 * Unit test of the instance map (detector/heap/instance_map.c): put, find and remove, replace
 * versus keep, the newest record waiting outside the table, backward-shift deletion, growth and
 * shrinking, for_each; then a few hundred thousand random operations checked against a plain
 * array model.
 *
 * The test includes instance_map.c itself rather than linking it: the table layout (probe runs,
 * load, capacity) is what backward shifting and resizing must keep right, and the map's
 * interface rightly hides it. The map only hashes and compares object addresses and never
 * touches an object, so the objects here are made-up 16-byte aligned addresses, and the test is
 * compiled against one Python's headers (registry.h includes Python.h) without libpython.
 * Build (the suite does it with Meson as build/test-instance-map):
 *   gcc -std=c11 -Idetector/threads -Idetector/runtime -Idetector/heap -Idetector/report \
 *       $(python3-config --includes) tests/unit/test_instance_map.c
 */
#include "instance_map.c"

#include "check.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static struct type_record types[3];

/* Forgets everything, as a fresh process would start. */
static void reset_map(void)
{
    if (map.entries)
        munmap(map.entries, map.capacity * sizeof(struct instance_record));
    memset(&map, 0, sizeof map);
}

/* Objects allocated one after another, as a real allocator hands them out. */
static PyObject *sequential_object(uint32_t i)
{
    return (PyObject *)(uintptr_t)(0x7f0000000000ull + 16ull * i);
}

/*
 * Objects scattered over 64 GiB, disjoint from the sequential ones (multiplying by an odd
 * number is a bijection of 32-bit values, so distinct i give distinct addresses).
 */
static PyObject *scattered_object(uint32_t i)
{
    return (PyObject *)(uintptr_t)(0x100000000000ull + 16ull * (uint32_t)(i * 2654435761u));
}

/* The record's generation: the site's low bits, so that each put of a test stores another. */
#define GENERATION_OF(site) ((site) % 64u)

static bool put(PyObject *object, unsigned type, site_id site, uint32_t size, bool replace)
{
    return instance_map_put(object, &types[type], site, size, GENERATION_OF(site), replace);
}

/*
 * The first `count` objects, counting from `from`, whose home slot in a table of the minimum
 * capacity is `home`.
 */
static void objects_at_home(size_t home, uint32_t *from, PyObject **found, size_t count)
{
    unsigned shift = shift_for(MIN_CAPACITY);
    for (size_t n = 0; n < count; (*from)++) {
        if (home_slot(sequential_object(*from), shift) == home)
            found[n++] = sequential_object(*from);
    }
}

/* The table slot of object, or -1 (for the newest record, or an absent one). */
static long slot_of(PyObject *object)
{
    struct instance_record *record = instance_map_find(object);
    return record && record != &map.newest ? (long)(record - map.entries) : -1;
}

/*
 * The table's own invariants: count is the number of entries, every entry is reachable from its
 * home slot without crossing an empty one (what a deletion must not break), the load stays
 * under 70%, and the table is shrunk once it is less than a tenth full (unless minimal).
 */
static bool table_is_sound(char *why, size_t why_size)
{
    size_t entries = 0;
    for (size_t i = 0; i < map.capacity; i++) {
        if (!map.entries[i].object)
            continue;
        entries++;
        size_t mask = map.capacity - 1;
        for (size_t slot = home_slot(map.entries[i].object, map.shift); slot != i;
             slot = (slot + 1) & mask) {
            if (!map.entries[slot].object) {
                snprintf(why, why_size,
                         "the entry at slot %zu is cut off from its home by the "
                         "empty slot %zu",
                         i, slot);
                return false;
            }
        }
    }
    if (entries != map.count) {
        snprintf(why, why_size, "%zu entries, count says %zu", entries, map.count);
        return false;
    }
    if (map.count * 10 > map.capacity * 7) {
        snprintf(why, why_size, "%zu entries in %zu slots: over 70%%", map.count, map.capacity);
        return false;
    }
    if (map.capacity > MIN_CAPACITY && map.count * 10 < map.capacity) {
        snprintf(why, why_size, "%zu entries in %zu slots: not shrunk", map.count, map.capacity);
        return false;
    }
    return true;
}

static void check_table(const char *when)
{
    char why[256] = "";
    CHECK(table_is_sound(why, sizeof why), "%s: %s", when, why);
}

static void test_empty(void)
{
    reset_map();
    CHECK(instance_map_find(sequential_object(1)) == NULL, "found in an empty map");
    CHECK(instance_map_find(NULL) == NULL, "NULL found in an empty map");
    CHECK(!instance_map_remove(sequential_object(1)), "removed from an empty map");
    CHECK(instance_map_count() == 0 && instance_map_bytes() == 0, "%zu records, %zu bytes",
          instance_map_count(), instance_map_bytes());
}

static void count_visit(struct instance_record *record, void *context)
{
    (void)record;
    (*(size_t *)context)++;
}

static void test_newest_waits_outside_the_table(void)
{
    reset_map();
    PyObject *first = sequential_object(1), *second = sequential_object(2);
    CHECK(put(first, 0, 1, 32, true), "put");
    CHECK(instance_map_count() == 1 && map.count == 0 && map.capacity == 0,
          "the first record went into a table: %zu in the table of %zu", map.count, map.capacity);
    struct instance_record *record = instance_map_find(first);
    CHECK(record == &map.newest && record->type == &types[0] && record->allocated_at == 1 &&
              record->size == 32,
          "the newest record is not found as put");
    CHECK(instance_map_remove(first), "the newest record was not removed");
    CHECK(instance_map_count() == 0 && map.capacity == 0 && !instance_map_find(first),
          "an instance that died first cost a table");
    CHECK(!instance_map_remove(first), "removed twice");

    CHECK(put(first, 0, 1, 32, true) && put(second, 1, 2, 48, true), "put");
    CHECK(map.count == 1 && slot_of(first) >= 0 && instance_map_find(second) == &map.newest,
          "the next put did not move the older record into the table");
    CHECK(instance_map_count() == 2, "%zu records", instance_map_count());
    size_t visits = 0;
    instance_map_for_each(count_visit, &visits);
    CHECK(visits == 2, "for_each visited %zu records, the newest included", visits);
    CHECK(instance_map_remove(first) && map.count == 0 && instance_map_find(second),
          "removing the table's record");
    check_table("newest");
}

/* Replace and keep, for a record waiting outside the table and for one inside it. */
static void test_replace_or_keep(void)
{
    reset_map();
    PyObject *object = sequential_object(10);
    for (int in_table = 0; in_table <= 1; in_table++) {
        const char *where = in_table ? "in the table" : "newest";
        CHECK(put(object, 0, 1, 32, true), "put");
        if (in_table)
            CHECK(put(sequential_object(11), 0, 3, 8, true) && slot_of(object) >= 0, "pushed");
        size_t count = instance_map_count();
        instance_map_find(object)->counted_hidden = 1;

        CHECK(put(object, 1, 2, 64, false), "keep");
        struct instance_record *record = instance_map_find(object);
        CHECK(record->type == &types[0] && record->allocated_at == 1 && record->size == 32 &&
                  record->generation == GENERATION_OF(1) && record->counted_hidden,
              "%s: replace=false changed the record", where);
        CHECK(instance_map_count() == count, "%s: keeping added a record", where);

        CHECK(put(object, 2, 5, 128, true), "replace");
        record = instance_map_find(object);
        CHECK(record->type == &types[2] && record->allocated_at == 5 && record->size == 128 &&
                  record->generation == GENERATION_OF(5) && !record->counted_hidden &&
                  !record->counted_leaked,
              "%s: replace=true did not give a fresh record", where);
        CHECK(instance_map_count() == count, "%s: replacing added a record", where);
        CHECK(instance_map_remove(object), "remove");
    }
    check_table("replace or keep");
}

/*
 * Puts objects, then `last` (whose home slot is away from theirs), so that they all leave the
 * newest place for the table.
 */
static void put_into_table(PyObject *const *objects, size_t count, PyObject *last)
{
    for (size_t i = 0; i < count; i++)
        put(objects[i], 0, (site_id)i + 1, 16, true);
    put(last, 0, 99, 16, true);
}

static void test_backward_shift(void)
{
    reset_map();
    uint32_t next = 1;
    const size_t h = 100;
    /* Slots h..h+3 hold a (home h), b (home h), c (home h+2), d (home h), in that order. */
    PyObject *run[3], *c, *elsewhere[2];
    objects_at_home(h, &next, run, 3);
    objects_at_home(h + 2, &next, &c, 1);
    objects_at_home(MIN_CAPACITY / 2, &next, elsewhere, 2);
    PyObject *a = run[0], *b = run[1], *d = run[2];
    put_into_table((PyObject *[]){a, b, c, d}, 4, elsewhere[0]);
    CHECK(slot_of(a) == (long)h && slot_of(b) == (long)h + 1 && slot_of(c) == (long)h + 2 &&
              slot_of(d) == (long)h + 3,
          "the run is not laid out as planned: %ld %ld %ld %ld", slot_of(a), slot_of(b), slot_of(c),
          slot_of(d));
    /* Removing b: c is at home and stays; d moves back over it into b's slot. */
    CHECK(instance_map_remove(b), "remove");
    CHECK(slot_of(a) == (long)h && slot_of(d) == (long)h + 1 && slot_of(c) == (long)h + 2 &&
              !map.entries[h + 3].object,
          "after removing b: a %ld, d %ld, c %ld, slot h+3 %s", slot_of(a), slot_of(d), slot_of(c),
          map.entries[h + 3].object ? "taken" : "empty");
    check_table("backward shift");

    /*
     * A run that wraps around the table's end: slots cap-2, cap-1, 0, 1 hold w0 (home cap-2),
     * w1 (home cap-2), x (home 0), w2 (home cap-2). Removing w0 moves w1 back, keeps x at home,
     * and moves w2 back across the end into cap-1.
     */
    const size_t last = MIN_CAPACITY - 1;
    PyObject *wrap[3], *x;
    objects_at_home(last - 1, &next, wrap, 3);
    objects_at_home(0, &next, &x, 1);
    put_into_table((PyObject *[]){wrap[0], wrap[1], x, wrap[2]}, 4, elsewhere[1]);
    CHECK(slot_of(wrap[0]) == (long)last - 1 && slot_of(wrap[1]) == (long)last && slot_of(x) == 0 &&
              slot_of(wrap[2]) == 1,
          "the wrapping run is not laid out as planned: %ld %ld %ld %ld", slot_of(wrap[0]),
          slot_of(wrap[1]), slot_of(x), slot_of(wrap[2]));
    CHECK(instance_map_remove(wrap[0]), "remove");
    CHECK(slot_of(wrap[1]) == (long)last - 1 && slot_of(wrap[2]) == (long)last && slot_of(x) == 0 &&
              !map.entries[1].object,
          "after removing the run's head: w1 %ld, w2 %ld, x %ld, slot 1 %s", slot_of(wrap[1]),
          slot_of(wrap[2]), slot_of(x), map.entries[1].object ? "taken" : "empty");
    check_table("backward shift across the end");
    CHECK(map.capacity == MIN_CAPACITY, "the table was resized: %zu", map.capacity);
}

/* The smallest capacity the growth rule allows for `entries` table entries. */
static size_t fitting_capacity(size_t entries)
{
    size_t capacity = MIN_CAPACITY;
    while (entries * 10 > capacity * 7)
        capacity *= 2;
    return capacity;
}

static void test_growth_and_shrinking(void)
{
    reset_map();
    const uint32_t n = 100000;
    for (uint32_t i = 0; i < n; i++)
        put(sequential_object(i), 0, i + 1, 16, true);
    /* n - 1 in the table, the last one newest. */
    CHECK(map.count == n - 1 && instance_map_count() == n, "%zu in the table, %zu in all",
          map.count, instance_map_count());
    CHECK(map.capacity == fitting_capacity(n - 1), "%u records in %zu slots, expected %zu", n,
          map.capacity, fitting_capacity(n - 1));
    CHECK(instance_map_bytes() == map.capacity * sizeof(struct instance_record), "%zu bytes",
          instance_map_bytes());
    check_table("grown");
    uint32_t missing = 0;
    for (uint32_t i = 0; i < n; i++)
        missing += instance_map_find(sequential_object(i)) == NULL;
    CHECK(missing == 0, "%u records lost while growing", missing);

    size_t peak = map.capacity;
    for (uint32_t i = 0; i < n - 100; i++)
        instance_map_remove(sequential_object(i));
    CHECK(map.capacity < peak && map.capacity == MIN_CAPACITY, "%zu slots for %zu records",
          map.capacity, map.count);
    check_table("shrunk");
    missing = 0;
    for (uint32_t i = n - 100; i < n; i++)
        missing += instance_map_find(sequential_object(i)) == NULL;
    CHECK(missing == 0, "%u records lost while shrinking", missing);
}

/* ---- random operations against a model ------------------------------------------------------ */

enum { KEYS = 20000, OPERATIONS = 400000, PHASE = 50000 };

struct model_record {
    bool present;
    unsigned type;
    uint32_t size;
};

static struct {
    PyObject *keys[KEYS];
    struct model_record records[KEYS];
    size_t present;
    uint8_t visits[KEYS];
    char divergence[512]; /* the first disagreement, empty while there is none */
} model;

static uint64_t random_state = 0x853c49e6748fea9bull;

static uint32_t random_below(uint32_t bound)
{
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (uint32_t)((random_state >> 11) % bound);
}

static void diverged(const char *format, ...)
{
    if (model.divergence[0])
        return;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(model.divergence, sizeof model.divergence, format, arguments);
    va_end(arguments);
}

/* The key's index is its record's site (site = index + 1), so a visitor knows which key it saw. */
static void model_visit(struct instance_record *record, void *context)
{
    (void)context;
    size_t key = record->allocated_at - 1;
    if (record->allocated_at == 0 || key >= KEYS || model.keys[key] != record->object) {
        diverged("for_each visited an object the map was never given");
        return;
    }
    model.visits[key]++;
}

static void compare_all(long operation)
{
    memset(model.visits, 0, sizeof model.visits);
    instance_map_for_each(model_visit, NULL);
    for (size_t key = 0; key < KEYS; key++) {
        const struct model_record *expected = &model.records[key];
        struct instance_record *record = instance_map_find(model.keys[key]);
        if (model.visits[key] != expected->present)
            diverged("operation %ld: key %zu visited %u times, present %d", operation, key,
                     model.visits[key], expected->present);
        if (!record != !expected->present)
            diverged("operation %ld: key %zu %s", operation, key,
                     record ? "found, but removed" : "not found");
        else if (record && (record->type != &types[expected->type] ||
                            record->size != expected->size || record->allocated_at != key + 1))
            diverged("operation %ld: key %zu has another record", operation, key);
    }
    if (instance_map_count() != model.present)
        diverged("operation %ld: %zu records, the model has %zu", operation, instance_map_count(),
                 model.present);
    char why[256];
    if (!table_is_sound(why, sizeof why))
        diverged("operation %ld: %s", operation, why);
}

static void random_operation(long operation, double put_share, size_t *last_put)
{
    size_t key = random_below(KEYS);
    struct model_record *expected = &model.records[key];
    PyObject *object = model.keys[key];
    if (random_below(1000) < put_share * 1000) {
        bool replace = random_below(2);
        unsigned type = random_below(3);
        uint32_t size = 16 * (1 + random_below(64));
        if (!put(object, type, (site_id)key + 1, size, replace))
            diverged("operation %ld: put failed", operation);
        model.present += !expected->present;
        if (!expected->present || replace)
            *expected = (struct model_record){.present = true, .type = type, .size = size};
        *last_put = key;
    } else {
        /* A tenth of the removals are of the newest record, the map's shortcut. */
        if (random_below(10) == 0) {
            key = *last_put;
            expected = &model.records[key];
            object = model.keys[key];
        }
        if (instance_map_remove(object) != expected->present)
            diverged("operation %ld: remove of key %zu answered %d", operation, key,
                     !expected->present);
        model.present -= expected->present;
        expected->present = false;
    }
    struct instance_record *record = instance_map_find(object);
    if (!record != !expected->present)
        diverged("operation %ld: key %zu %s right after", operation, key,
                 record ? "found" : "not found");
}

static void test_random_against_model(void)
{
    reset_map();
    memset(&model, 0, sizeof model);
    for (uint32_t i = 0; i < KEYS; i++)
        model.keys[i] = i % 2 ? scattered_object(i) : sequential_object(i);
    /*
     * Phases that mostly put, then mostly remove, so that the population climbs past several
     * growths and falls back past shrinking thresholds, more than once.
     */
    static const double put_shares[] = {0.75, 0.0, 0.95, 0.02, 0.6, 0.3, 0.9, 0.1};
    size_t last_put = 0, peak_capacity = 0, low_capacity_after_peak = 0;
    for (long operation = 0; operation < OPERATIONS && !model.divergence[0]; operation++) {
        random_operation(operation, put_shares[operation / PHASE], &last_put);
        if (operation % 4000 == 3999)
            compare_all(operation);
        if (map.capacity > peak_capacity)
            peak_capacity = low_capacity_after_peak = map.capacity;
        else if (map.capacity < low_capacity_after_peak)
            low_capacity_after_peak = map.capacity;
    }
    CHECK(!model.divergence[0], "%s", model.divergence);
    CHECK(peak_capacity >= 32768, "the population never grew the table past %zu slots",
          peak_capacity);
    CHECK(low_capacity_after_peak < peak_capacity, "the table never shrank after its peak (%zu)",
          peak_capacity);

    for (size_t key = 0; key < KEYS; key++) {
        model.present -= model.records[key].present;
        model.records[key].present = false;
        instance_map_remove(model.keys[key]);
    }
    compare_all(OPERATIONS);
    CHECK(!model.divergence[0], "%s", model.divergence);
    CHECK(instance_map_count() == 0 && map.capacity == MIN_CAPACITY,
          "emptied: %zu records in %zu slots", instance_map_count(), map.capacity);
}

int main(void)
{
    test_empty();
    test_newest_waits_outside_the_table();
    test_replace_or_keep();
    test_backward_shift();
    test_growth_and_shrinking();
    test_random_against_model();
    return checks_summary();
}
