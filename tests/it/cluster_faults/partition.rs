//! Test 6: a partition in network namespaces.
