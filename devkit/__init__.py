"""What production does not need: the local stack, the workload generator, fuzzing and the
pipeline harness. See devkit/README.md."""
