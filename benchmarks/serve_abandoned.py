"""Latency of a short completion right after clients abandon long streams
(issue: abandoned sequences used to keep their slots and decode on).

  gen-jax serve --workdir=runs/lm_pydoc --context=1024 --slots=2 --model_name=lm --port=8769 &
  python -m benchmarks.serve_abandoned http://127.0.0.1:8769

Five times: two clients open 1000-token streams, read one chunk and hang up;
then one 4-token greedy completion is timed (urllib, one connection each).
Prints its median against the idle median of ten."""

import json
import socket
import statistics
import sys
import time
import urllib.request


def main(url: str) -> None:
    def short():
        body = json.dumps(
            {"model": "lm", "prompt": "The ", "max_tokens": 4, "temperature": 0}
        ).encode()
        t = time.perf_counter()
        req = urllib.request.Request(
            url + "/v1/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req).read()
        return time.perf_counter() - t

    for _ in range(3):
        short()
    idle = statistics.median([short() for _ in range(10)])
    host, port = url.split("//")[1].split(":")
    after = []
    for rep in range(5):
        socks = []
        for _ in range(2):
            body = json.dumps(
                {"model": "lm", "prompt": "The ", "max_tokens": 1000, "stream": True}
            ).encode()
            s = socket.create_connection((host, int(port)))
            s.sendall(
                f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            s.recv(4096)
            socks.append(s)
        for s in socks:
            s.close()
        after.append(short())
        time.sleep(0.5)
    print(
        f"idle median {idle:.4f} s; right after 2 abandoned long streams: median {statistics.median(after):.4f} s ({statistics.median(after) / idle:.1f}x), all {[round(a, 4) for a in after]}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
