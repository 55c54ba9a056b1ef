"""The input pipeline on TensorFlow's tf.data service, for hosts whose CPUs cannot feed their GPUs.

    python -m kerasface.data.service dispatcher --port 5050                    # one, anywhere
    python -m kerasface.data.service worker --dispatcher HOST:5050 [--port 5051]  # on each spare CPU host
    python -m kerasface.train --paper=... --set data.service=grpc://HOST:5050

With `data.service` set, each training stream (decode, crop, augment, batch, mixed sources: the
whole of kerasface.data.pipeline.build_dataset) runs on the service's workers and the trainer
only receives batches; evaluation stays local, in order. The servers are TensorFlow's own
(tf.data.experimental.service.DispatchServer / WorkerServer): the workers run the serialized
pipeline graph, so they need TensorFlow and read access to the TFRecord paths the trainer names
(a shared file system or the same paths), not kerasface. Every worker produces the whole stream
(ShardingPolicy.OFF, shuffled unseeded so that they differ); the trainer reads from all of them.
"""

from __future__ import annotations

import argparse
import sys

import tensorflow as tf


def start_dispatcher(port: int = 0, work_dir: str = "") -> tf.data.experimental.service.DispatchServer:
    """A dispatcher; `port` 0 picks a free one (its address: server.target, "grpc://localhost:PORT")."""
    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir or None,
                                                           fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0) -> tf.data.experimental.service.WorkerServer:
    """A worker registered with `dispatcher` ("HOST:PORT", with or without grpc://)."""
    address = dispatcher.split("://", 1)[-1]
    return tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address, port=port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasface.data.service", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    dispatcher = sub.add_parser("dispatcher", help="run a tf.data service dispatcher")
    dispatcher.add_argument("--port", type=int, default=5050)
    dispatcher.add_argument("--work-dir", default="", help="journal folder: a restarted dispatcher resumes its jobs")
    worker = sub.add_parser("worker", help="run a tf.data service worker")
    worker.add_argument("--dispatcher", required=True, help="HOST:PORT of the dispatcher")
    worker.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    if args.role == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        print(f"tf.data service dispatcher at {server.target}; train with --set data.service={server.target}",
              file=sys.stderr)
    else:
        server = start_worker(args.dispatcher, args.port)
        print(f"tf.data service worker registered with {args.dispatcher}", file=sys.stderr)
    try:
        server.join()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
