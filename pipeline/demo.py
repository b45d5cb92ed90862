"""`make demo`: the creator's whole routine on the built-in tiny model, hands-off.

1. `aiimg init` in the current folder (only the files missing; yours are never touched),
2. `aiimg run --max-drafts 3 --once` as a real subprocess (the loop, watcher and all),
3. as soon as the first draft exists, the demo marks it with seed.txt, as a creator would in a
   file manager; the loop preempts the draft in progress and makes the 3 variations first,
4. `aiimg build` renders the works into output/, and the demo prints where to look.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipeline import config, scaffold
from pipeline.content import Content


def main() -> int:
    for line in scaffold.init(Path.cwd()).files():
        print(f"demo: {line}")
    cfg = config.load(None)
    content = Content(cfg.content_dir).ensure()
    started = time.time()
    loop = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--max-drafts", "3", "--once"])
    seeded = mark_first_draft(content, started, loop)
    if loop.wait() != 0:
        print("demo: the loop failed (see above)", file=sys.stderr)
        return 1
    work = content.read_work(seeded)
    print(f"demo: seed {seeded} -> {len(work.variations)} variations in {content.work_folder(seeded)}")
    return build(cfg)


def mark_first_draft(content: Content, since: float, loop: subprocess.Popen) -> str:
    while loop.poll() is None:
        fresh = [d for d in content.drafts() if d.recipe_path.stat().st_mtime > since]
        if fresh:
            path = content.write_marker(fresh[0].id, "# marked by `make demo`: 3 variations, default settings\n")
            print(f"demo: marked draft {fresh[0].id} as a seed (wrote {path})")
            return fresh[0].id
        time.sleep(0.2)
    raise SystemExit("demo: the loop exited before making a draft")


def build(cfg) -> int:
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "build"])
    if result.returncode == 0:
        print(f"demo: open {Path(cfg.output_dir).resolve() / 'index.html'} in a browser (or run `make serve`)")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
