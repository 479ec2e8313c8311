"""``rerankd export``: write a model as an ONNX directory (graph + tokenizer + rerankd metadata)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("export", help="export a model to ONNX (fp32, fp16, dynamic int8 or 4-bit weights)", description=__doc__)
    parser.add_argument("--model", "-m", default=None, help="model directory or hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--out", "-o", required=True, help="directory to write (must not exist or be empty)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8", "int4"],
                        help="fp32; fp16; int8 = dynamic int8 of the matrix products; int4 = 4-bit weights in blocks "
                             "of 32 (matrix products and the token embedding table) (bf16 is refused: "
                             "ONNX Runtime's CPU provider has no bf16 kernels)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer)")
    parser.add_argument("--no-optimize", action="store_true", help="skip graph optimization (attention/LayerNorm/GELU fusion)")
    parser.add_argument("--per-tensor", action="store_true", help="int8: one scale per weight matrix instead of per channel")
    parser.add_argument("--int8-all", action="store_true",
                        help="int8: quantize the FFN down-projections too (faster, less accurate)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.errors import InputError
    from rerankd.export import export_model, read_export_info

    if args.opset < 17:
        raise InputError(f"--opset {args.opset} is too old; use 17 or newer (LayerNormalization is an op from 17)")
    out = export_model(args.model, args.out, precision=args.precision, revision=args.revision, opset=args.opset,
                       optimize=not args.no_optimize, per_channel=not args.per_tensor,
                       keep_ffn_output=not args.int8_all)
    info = read_export_info(out)
    size = sum(f.stat().st_size for f in out.glob("model.onnx*"))
    print_json({"out": str(out), "size_bytes": size, **(vars(info) if info else {})})
    return 0
