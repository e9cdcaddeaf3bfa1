"""Show the same input through an original model and its state-exposed rebuild.

Usage: python examples/before_after.py ORIGINAL.keras EXPOSED.keras
"""

import sys

import numpy as np

import surgery
from surgery.check.verify import random_inputs


def main(original_path: str, exposed_path: str) -> None:
    original = surgery.load_model(original_path)
    exposed = surgery.load_model(exposed_path)
    x = random_inputs(original, batch=2, seed=7)
    before = original(x[0] if len(x) == 1 else x)
    extra = exposed.inputs[len(original.inputs):]
    zeros = [np.zeros((2, *t.shape[1:]), "float32") for t in extra]
    after = exposed(x + zeros)
    print(f"original: {len(original.inputs)} input(s) -> {len(original.outputs)} output(s)")
    print(f"exposed:  {len(exposed.inputs)} input(s) -> {len(exposed.outputs)} output(s)")
    print("inputs: ", ", ".join(t.name for t in exposed.inputs))
    print("outputs:", ", ".join(exposed.output_names))
    np.set_printoptions(precision=5, suppress=True)
    print(f"original output row 0:   {np.asarray(before)[0]}")
    print(f"exposed  output row 0:   {np.asarray(after[0])[0]}  (identical: {np.array_equal(np.asarray(before), np.asarray(after[0]))})")
    for name, value in zip(exposed.output_names[len(original.outputs):], after[len(original.outputs):]):
        print(f"{name:>10s} row 0: {np.asarray(value)[0]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
