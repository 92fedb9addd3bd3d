/* pointer_set.c against a sorted array as the model, through growth and duplicates. */
#include "check.h"

#include "pointer_set.h"

#include <stdint.h>
#include <stdlib.h>

static int compare(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    enum { ADDS = 200000 };
    struct pointer_set set = {0};
    CHECK(!pointer_set_contains(&set, (void *)16), "an empty set contains something");
    uintptr_t *model = calloc(ADDS, sizeof *model);
    size_t model_count = 0;
    srand(12345);
    int wrong_answers = 0;
    for (int i = 0; i < ADDS; i++) {
        /* Aligned addresses from a small range: many repeats, like types met again. */
        uintptr_t address = 0x10000 + (uintptr_t)(rand() % (ADDS / 2)) * 16;
        bool in_model = bsearch(&address, model, model_count, sizeof *model, compare) != NULL;
        wrong_answers += pointer_set_contains(&set, (void *)address) != in_model;
        wrong_answers += pointer_set_add(&set, (void *)address) == in_model;
        if (!in_model) {
            model[model_count++] = address;
            qsort(model, model_count, sizeof *model, compare);
        }
    }
    CHECK(wrong_answers == 0, "%d answers differ from the model", wrong_answers);
    CHECK(set.count == model_count, "%zu pointers, the model has %zu", set.count, model_count);
    CHECK(2 * set.count <= set.capacity, "more than half full: %zu of %zu", set.count,
          set.capacity);
    int missing = 0;
    for (size_t i = 0; i < model_count; i++)
        missing += !pointer_set_contains(&set, (void *)model[i]);
    CHECK(missing == 0, "%d added pointers are missing", missing);
    CHECK(!pointer_set_contains(&set, NULL), "NULL is in the set");
    size_t capacity = set.capacity;
    pointer_set_empty(&set);
    CHECK(set.count == 0 && set.capacity == capacity &&
              !pointer_set_contains(&set, (void *)model[0]),
          "empty left pointers or dropped its slots");
    CHECK(pointer_set_add(&set, (void *)model[0]) && pointer_set_contains(&set, (void *)model[0]),
          "an emptied set takes pointers again");
    pointer_set_clear(&set);
    CHECK(set.count == 0 && !pointer_set_contains(&set, (void *)model[0]), "clear left pointers");
    free(model);
    return checks_summary();
}
