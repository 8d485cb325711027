"""`stancerun predict`: classify texts with a run's saved model, or with an ONNX export of one."""

from __future__ import annotations

from stancerun.cli.arguments import add_trust_remote_code


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="classify texts with a run's saved model")
    parser.add_argument("run_dir", help="a run directory (holds model/), or an ONNX export of one (stancerun export --onnx)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--input", help="a CSV or JSONL file with the texts (the column the model was trained on)")
    parser.add_argument("--output", help="write JSONL, or CSV if the name ends in .csv (default: JSONL on stdout)")
    parser.add_argument("--pair", help="the text pair (e.g. the stance target) for texts given on the command line")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="weights and activations: float32 (default, exact) or bfloat16/float16 (faster on "
                             "GPUs and on CPUs with AMX or AVX512-BF16; probabilities differ by ~1e-2)")
    add_trust_remote_code(parser)
    parser.set_defaults(handler=predict)


def predict(args) -> int:
    import sys
    from pathlib import Path

    from stancerun.rundir import artifacts
    from stancerun.errors import UsageError
    from stancerun.rundir.layout import RunDir
    from stancerun.inference.onnx_predict import check_model_dir, predict_onnx, read_info
    from stancerun.inference.predict import dtype_note, format_rows, inference_device, predict, read_inputs

    run_dir = Path(args.run_dir)
    onnx = check_model_dir(run_dir, args.dtype)  # an ONNX export: onnxruntime, and torch is never imported
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts on the command line or --input FILE (one of the two)")
    # The input is checked before the model loads: a wrong column fails in 0.2 s, not after 3.5 s of loading.
    info = read_info(run_dir) if onnx else artifacts.check_saved_model(RunDir(run_dir).model, args.trust_remote_code)
    if args.input:
        texts, pairs = read_inputs(Path(args.input), info.get("text_column") or "text", info.get("text_pair_column"))
    else:
        if info.get("text_pair_column"):
            if args.pair is None:
                raise UsageError(f"this model classifies (text, {info['text_pair_column']}) pairs: add --pair VALUE")
            pairs = [args.pair] * len(args.texts)
        else:
            pairs = None
        texts = list(args.texts)
    if onnx:
        rows = predict_onnx(run_dir, texts, pairs, args.batch_size)
    else:
        device = inference_device()
        note = dtype_note(args.dtype, device)
        if note:
            print(f"warning: {note}", file=sys.stderr)
        saved = artifacts.load_model(RunDir(run_dir).model, device=device, dtype=args.dtype,
                                     trust_remote_code=args.trust_remote_code)
        rows = predict(run_dir, texts, pairs, args.batch_size, saved=saved)
    output = Path(args.output) if args.output else None
    fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"
    text = format_rows(rows, fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        artifacts.atomic_write(output, text)
    return 0
