"""`stancerun serve`: a run's model over HTTP (POST /predict, text-embeddings-inference's shapes)."""

from __future__ import annotations

from stancerun.cli.arguments import add_trust_remote_code


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a run's model over HTTP (POST /predict, text-embeddings-inference's shapes)")
    parser.add_argument("run_dir", help="a run directory, or an ONNX export of one (then torch is never imported)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="default 8080")
    parser.add_argument("--max-batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a request waits for others to share its forward pass (default 5)")
    parser.add_argument("--max-client-batch-size", type=int, default=32, help="texts per request; more is a 413 (default 32)")
    parser.add_argument("--payload-limit", type=int, default=2_000_000,
                        help="bytes of a request body; more is a 413, before any parsing (default 2000000)")
    parser.add_argument("--body-timeout", type=float, default=10.0,
                        help="seconds to receive a request's whole body; slower is a 408 and the connection closed (default 10)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="on SIGTERM, seconds to wait for open requests before closing them; then the queue is "
                             "answered and the server exits (default 30)")
    parser.add_argument("--max-queue", type=int, default=512, help="requests waiting; more is a 429 (default 512)")
    parser.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /predict; better: set the environment "
                                          "variable STANCERUN_API_KEY instead (a key on the command line shows in `ps`)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="a run's weights and activations, as for predict (default float32)")
    add_trust_remote_code(parser)
    parser.set_defaults(handler=serve)


def serve(args) -> int:
    import os
    from pathlib import Path

    from stancerun.errors import UsageError
    from stancerun.inference.serve import Limits, serve as run_server

    for name in ("max_batch_size", "max_client_batch_size", "max_queue", "payload_limit", "port"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected a number >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms: expected a number >= 0, got {args.max_wait_ms}")
    if not args.body_timeout > 0:
        raise UsageError(f"--body-timeout: expected a number of seconds > 0, got {args.body_timeout}")
    if not args.graceful_timeout >= 0:
        raise UsageError(f"--graceful-timeout: expected a number of seconds >= 0, got {args.graceful_timeout}")
    limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_client_batch_size, args.max_queue, args.payload_limit,
                    args.body_timeout)
    run_server(Path(args.run_dir), args.host, args.port, limits, args.api_key or os.environ.get("STANCERUN_API_KEY"),
               args.dtype, trust_remote_code=args.trust_remote_code, graceful_timeout=args.graceful_timeout)
    return 0
