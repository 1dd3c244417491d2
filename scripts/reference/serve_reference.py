"""The Python reference for `bertcls serve`: what a user serving a fine-tuned classifier runs today.

    python="$(scripts/reference/setup.sh)"
    "$python" scripts/reference/serve_reference.py --model target/bench/serve-sentiment --port 0

A transformers `pipeline("text-classification", top_k=None)` behind FastAPI and uvicorn (one
worker, torch on 2 threads), answering in the shapes of `bertcls serve` (TEI's):

    POST /predict {"inputs": "a text"}        -> [{"label": "1", "score": 0.98}, {"label": "0", ...}]
    POST /predict {"inputs": ["a", "b"]}      -> a list of such lists
    GET  /health                              -> 200

Plain on purpose: no batching queue of its own. The handler is a plain `def`, so FastAPI runs it
in its thread pool; a lock lets one request at a time through the pipeline, since a pipeline (its
fast tokenizer in particular) is not safe to call from several threads at once and two forward
passes on 2 cores would only fight over them. Request logging is off (uvicorn's access log), as
the load benchmark runs `bertcls serve` without request logs too.

Once the model is loaded and the socket bound it prints, on standard error,
`serve_reference: listening on http://HOST:PORT` (port 0 picks a free port). SIGTERM or Ctrl-C
stops it (uvicorn's own handling).
"""

import argparse
import socket
import sys
import threading
from typing import List, Union

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from transformers import pipeline


class PredictRequest(BaseModel):
    inputs: Union[str, List[str]]
    truncate: bool = False


def create_app(model_dir: str) -> FastAPI:
    classifier = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    lock = threading.Lock()
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        # TEI's error body rather than FastAPI's {"detail": ...}, so that clients see one shape.
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse(status_code=422, content={"error": message, "error_type": "Validation"})

    @app.get("/health")
    def health() -> dict:
        return {}

    @app.post("/predict")
    def predict(request: PredictRequest):
        with lock:
            # top_k=None: every label with its score, highest first; a list gives a list of those.
            scores = classifier(request.inputs, truncation=request.truncate)
        # transformers 5 answers a single text as a batch of one; TEI's shape is the bare list.
        if isinstance(request.inputs, str) and scores and isinstance(scores[0], list):
            return scores[0]
        return scores

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a folder written by bertcls train or transformers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()

    torch.set_num_threads(2)
    app = create_app(args.model)
    # The socket is bound here, so that the readiness line can name the port even when it is 0.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False)
    # Listening before the line is printed: a client that connects at once waits in the backlog.
    sock.listen(config.backlog)
    server = uvicorn.Server(config)
    print(f"serve_reference: listening on http://{host}:{port}", file=sys.stderr, flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
