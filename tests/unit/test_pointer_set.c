/* pointer_set.c against a model (a flag per address of the range the test draws from), through
   growth and duplicates. */
#include "check.h"

#include "pointer_set.h"

#include <stdint.h>
#include <stdlib.h>

enum { ADDS = 200000, ADDRESSES = ADDS / 2 };

static void *address_of(size_t index)
{
    return (void *)(0x10000 + (uintptr_t)index * 16);
}

int main(void)
{
    struct pointer_set set = {0};
    CHECK(!pointer_set_contains(&set, (void *)16), "an empty set contains something");
    bool *in_model = calloc(ADDRESSES, sizeof *in_model);
    size_t model_count = 0, first = ADDRESSES;
    srand(12345);
    int wrong_answers = 0;
    for (int i = 0; i < ADDS; i++) {
        /* Aligned addresses from a small range: many repeats, like types met again. */
        size_t index = (size_t)(rand() % ADDRESSES);
        wrong_answers += pointer_set_contains(&set, address_of(index)) != in_model[index];
        wrong_answers += pointer_set_add(&set, address_of(index)) == in_model[index];
        if (!in_model[index]) {
            in_model[index] = true;
            model_count++;
            first = index < first ? index : first;
        }
    }
    CHECK(wrong_answers == 0, "%d answers differ from the model", wrong_answers);
    CHECK(set.count == model_count, "%zu pointers, the model has %zu", set.count, model_count);
    CHECK(2 * set.count <= set.capacity, "more than half full: %zu of %zu", set.count,
          set.capacity);
    int missing = 0, extra = 0;
    for (size_t index = 0; index < ADDRESSES; index++) {
        missing += in_model[index] && !pointer_set_contains(&set, address_of(index));
        extra += !in_model[index] && pointer_set_contains(&set, address_of(index));
    }
    CHECK(missing == 0 && extra == 0, "%d added pointers are missing, %d others are in", missing,
          extra);
    CHECK(!pointer_set_contains(&set, NULL), "NULL is in the set");
    size_t capacity = set.capacity;
    pointer_set_empty(&set);
    CHECK(set.count == 0 && set.capacity == capacity &&
              !pointer_set_contains(&set, address_of(first)),
          "empty left pointers or dropped its slots");
    CHECK(pointer_set_add(&set, address_of(first)) && pointer_set_contains(&set, address_of(first)),
          "an emptied set takes pointers again");
    pointer_set_clear(&set);
    CHECK(set.count == 0 && !pointer_set_contains(&set, address_of(first)), "clear left pointers");
    free(in_model);
    return checks_summary();
}
