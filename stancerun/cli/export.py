"""`stancerun export`: a standalone transformers model (LoRA merged) with a model card, or an ONNX model."""

from __future__ import annotations

from stancerun.cli.arguments import add_trust_remote_code


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a standalone transformers model (LoRA merged) with a model card")
    parser.add_argument("run_dir", help="a run directory")
    parser.add_argument("out_dir", help="where the model goes (new or empty)")
    parser.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights")
    parser.add_argument("--onnx", action="store_true",
                        help="write an ONNX model (merged, calibration folded in) for onnxruntime instead; it must agree "
                             "with the run's predictions on the validation split, or nothing is written")
    parser.add_argument("--int8", action="store_true", help="with --onnx: quantize the weights to int8 (dynamic quantization)")
    parser.add_argument("--fine-tuned-only", action="store_true",
                        help="for a run that stacks baselines with the model: export the fine-tuned transformer alone "
                             "(its scores are the report's \"fine-tuned alone\" row, not the shipped ones)")
    add_trust_remote_code(parser)
    parser.set_defaults(handler=export)


def export(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from stancerun.inference.export import export as export_model

    if args.onnx:
        from stancerun.inference.onnx_export import export_onnx

        figures = export_onnx(Path(args.run_dir), Path(args.out_dir), int8=args.int8,
                              trust_remote_code=args.trust_remote_code)
        Console().print(f"[bold green]exported:[/] {args.out_dir} ({'int8' if args.int8 else 'float32'} ONNX, "
                        f"{figures['file_size'] / 1e6:.1f} MB): on the {figures['n']} validation texts its labels agree "
                        f"with the run's on {figures['agreement']:.2%}; {figures['metric']} {figures['metric_export']:.4f} "
                        f"against the run's {figures['metric_run']:.4f}. `stancerun predict {args.out_dir}` and "
                        f"`stancerun serve {args.out_dir}` run it without torch.")
        return 0
    if args.int8:
        from stancerun.errors import UsageError

        raise UsageError("--int8 quantizes an ONNX export: add --onnx")
    out = export_model(Path(args.run_dir), Path(args.out_dir), args.merge, args.fine_tuned_only,
                       trust_remote_code=args.trust_remote_code)
    Console().print(f"[bold green]exported:[/] {out}  (how to load it: the \"Use\" section of {out / 'README.md'})")
    return 0
