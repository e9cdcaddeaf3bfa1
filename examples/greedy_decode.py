"""Greedy decoding with the two models `lstm-surgery split-seq2seq` writes.

Usage: python examples/greedy_decode.py OUTDIR [N]

OUTDIR holds encoder.keras and decoder_step.keras split from fixtures/models/seq2seq.keras
(or seq2seq_gru.keras): models trained with teacher forcing to reverse 6 tokens from 3..11
(0 = pad, 1 = start, 2 = end). Decodes N (default 100) random sequences of that task, prints
a few, and reports how many the model reverses exactly.
"""

import sys
from pathlib import Path

import numpy as np

import surgery
from surgery.ops.seq2seq import greedy_decode

START, END = 1, 2


def main(outdir: str, count: int = 100) -> None:
    encoder = surgery.load_model(Path(outdir) / "encoder.keras")
    decoder = surgery.load_model(Path(outdir) / "decoder_step.keras")
    source = np.random.default_rng(0).integers(3, 12, size=(count, 6))
    decoded = greedy_decode(encoder, decoder, source, start_token=START, end_token=END, max_len=12)
    expected = [list(map(int, row[::-1])) for row in source]
    print(f"{'source':<26}{'expected (reversed)':<26}greedy")
    for row, want, got in list(zip(source, expected, decoded))[:5]:
        print(f"{str(list(map(int, row))):<26}{str(want):<26}{got}{'' if got == want else '  x'}")
    exact = sum(got == want for got, want in zip(decoded, expected))
    tokens = sum(g == w for got, want in zip(decoded, expected) for g, w in zip(got, want))
    print(f"exact: {exact}/{count} sequences; tokens in place: {tokens}/{6 * count} ({tokens / (6 * count):.1%})")
    # One sequence in, one list of tokens out.
    print(f"single: {expected[0][::-1]} -> {greedy_decode(encoder, decoder, source[0], START, END, 12)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)
