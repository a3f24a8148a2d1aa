"""Statistics over arrays of metric values: pure numpy, frozen results."""
