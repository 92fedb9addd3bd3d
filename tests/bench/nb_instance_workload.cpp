// The nanobind half of scripts/bench-instances: a bound C++ class whose instances are made and
// destroyed in bulk, from Python (Item(x): nb_type's tp_new) and from C++ (churn(n): returned by
// value, wrapped by nanobind's own instance allocation), all with the GIL held.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

struct Item {
    long x = 0;
    double weight = 1.0;
    explicit Item(long value) : x(value) {}
};

NB_MODULE(nb_instance_workload, m)
{
    nb::class_<Item>(m, "Item").def(nb::init<long>()).def_rw("x", &Item::x);
    m.def(
        "churn",
        [](long iterations) {
            long checksum = 0;
            for (long i = 0; i < iterations; i++) {
                nb::object item = nb::cast(Item(i));
                checksum += nb::cast<Item &>(item).x & 1;
            }
            return checksum;
        },
        "churn(n): make n Items in C++, wrap each in a new instance and free it");
    m.def(
        "keep",
        [](long count) {
            nb::list items;
            for (long i = 0; i < count; i++)
                items.append(nb::cast(Item(i)));
            return items;
        },
        "keep(n): a list of n live Items");
}
