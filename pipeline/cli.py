"""The `aiimg` command: load config, call one library function, report, exit code.

Library code raises AiimgError with a message naming the file, key or value; this module alone
turns it into `aiimg: error: ...` and exit status 1. Anything else is a bug: its traceback goes
to the log file (logs.py) and the user gets one line naming that file, exit status 2. Logging
is configured here once (-v / -q). torch is never imported here.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import click

from pipeline import __version__, logs
from pipeline import config as config_mod
from pipeline.errors import AiimgError

log = logging.getLogger("aiimg.cli")


def say(text: str) -> None:
    """A command's report of what it did: on the terminal unless -q, and in the log file."""
    log.info("%s", text)


class Ctx:
    def __init__(self, config_path, content, model):
        self.config_path, self.content, self.model = config_path, content, model

    def config(self, **overrides) -> config_mod.Config:
        """The effective config; from here on, this command also logs to its content folder."""
        cfg = config_mod.load(self.config_path)
        changes = {"model__id": self.model, **overrides}
        if self.content:
            changes["content"] = str(Path(self.content).resolve())
        cfg = config_mod.override(cfg, **changes)
        from pipeline.content import Content

        logs.log_to(Content(cfg.content_dir).logs_dir)
        return cfg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: ./aiimg.toml; built-in defaults when absent).",
)
@click.option("--content", type=click.Path(file_okay=False), help="Content folder, overriding the config's.")
@click.option("--model", help="Model overriding [model] id: repo id, folder, .safetensors, or tiny.")
@click.option("-v", "--verbose", is_flag=True, help="Say more (debug messages, tracebacks on the terminal).")
@click.option("-q", "--quiet", is_flag=True, help="Say only warnings and errors.")
@click.version_option(__version__, prog_name="aiimg")
@click.pass_context
def cli(ctx, config_path, content, model, verbose, quiet):
    """aiimg: drafts -> seeds -> variations -> a static gallery.

    \b
    The creator's loop:
      aiimg init           start a project here (aiimg.toml, starter wildcards)
      aiimg run            make drafts; whenever a seed.txt appears beside a draft,
                           make its variations first (Ctrl-C stops cleanly)
      aiimg build          render content/works into output/, a static site
    One-off commands: draft, vary, status, rank, review, stats, serve, deploy, config.
    """
    logs.configure(-1 if quiet else 1 if verbose else 0)
    ctx.obj = Ctx(config_path, content, model)


@cli.command()
@click.option("-n", "count", type=click.IntRange(1), default=1, show_default=True, help="How many drafts.")
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False),
    help="Remake the image in FILE: a PNG from aiimg, A1111, Forge or Civitai (its parameters), or a draft.json.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="With --from: this seed instead of the image's.")
@click.option("--prompt", default="", help="With --from: this prompt instead of the image's.")
@click.option("--negative", default="", help="With --from: this negative prompt instead of the image's.")
@click.pass_obj
def draft(obj, count, source, seed, prompt, negative):
    """Make N txt2img drafts now, or remake one image with --from FILE."""
    from pipeline import studio

    if source:
        studio.draft_from_command(obj.config(), source, seed, prompt, negative)
    elif seed is not None or prompt or negative:
        raise click.UsageError("--seed, --prompt and --negative go with --from FILE")
    else:
        studio.draft_command(obj.config(), count)


@cli.command()
@click.argument("draft_ids", nargs=-1)
@click.pass_obj
def vary(obj, draft_ids):
    """Make the variations of waiting seeds now (all, or the DRAFT_IDS named)."""
    from pipeline import studio

    studio.vary_command(obj.config(), list(draft_ids))


@cli.command()
@click.option(
    "--max-drafts",
    type=click.IntRange(0),
    default=None,
    help="Make at most N new drafts in this run (0: none), then keep serving seeds.",
)
@click.option("--once", is_flag=True, help="Exit 0 once no seed waits and the drafts are made.")
@click.pass_obj
def run(obj, max_drafts, once):
    """The loop: seeds first (oldest marker first), drafts only when no seed waits.

    One worker per device of [run] devices (every CUDA GPU by default), or per GPU of the Ray
    cluster at [run] ray_address; see docs/workers.md."""
    from pipeline import studio

    studio.run_command(obj.config(), max_drafts=max_drafts, once=once)


@cli.command()
@click.pass_obj
def status(obj):
    """Drafts, seeds waiting, seeds with errors, works, what the loop and each worker are doing."""
    from pipeline import studio

    click.echo(studio.status_report(obj.config()))


@cli.command("config")
@click.option(
    "--defaults",
    is_flag=True,
    help="Print a documented aiimg.toml: every key with its default, doc and allowed values.",
)
@click.pass_obj
def config_cmd(obj, defaults):
    """Print the effective configuration (or a documented aiimg.toml of the defaults)."""
    if defaults:
        click.echo(config_mod.documented_toml(), nl=False)
        return
    import dataclasses
    import json

    click.echo(json.dumps(dataclasses.asdict(obj.config()), indent=2, ensure_ascii=False))


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory):
    """Start a project in DIRECTORY (default: here): aiimg.toml, starter wildcards, .gitignore.

    Files already there are kept, never overwritten."""
    from pipeline import scaffold

    say(scaffold.init(directory).summary())


# -- the gallery (no torch) -------------------------------------------------------------------


@cli.command()
@click.option("--output", type=click.Path(file_okay=False), help="Output folder, overriding the config's.")
@click.option("--base-url", help="Absolute URL the site is served from, overriding [site] base_url.")
@click.option(
    "--strict", is_flag=True, help="Exit 1 at the end if an image was corrupt or missing, or over max_size_mb."
)
@click.option("--clean", is_flag=True, help="Remove what the last build made and rebuild everything (no cache).")
@click.pass_obj
def build(obj, output, base_url, strict, clean):
    """Render content/works into a static site (output/) for any static host."""
    from pipeline import gallery

    overrides = {"site__base_url": base_url}
    if output:
        overrides["output"] = str(Path(output).resolve())
    report = gallery.build_site(obj.config(**overrides), clean=clean)
    say(report.summary())
    if strict and report.problems:
        raise AiimgError(f"{len(report.problems)} problem(s) in content (see above); built anyway")
    if strict and report.over_budget:
        raise AiimgError(f"{report.output} is over [site] max_size_mb = {report.max_size_mb} (see above); built anyway")


@cli.command()
@click.option("--remote", default="origin", show_default=True, help="The git remote to push to.")
@click.option("--branch", default="gh-pages", show_default=True, help="The branch GitHub Pages serves.")
@click.option("-m", "--message", help="The commit message (default: how many works, from which commit).")
@click.option("--force", is_flag=True, help="Deploy even if base_url is not where the remote's Pages site is served.")
@click.pass_obj
def deploy(obj, remote, branch, message, force):
    """Build, then push output/ to the gh-pages branch (GitHub Pages), never force-pushing."""
    from pipeline.gallery.deploy import deploy as deploy_site

    report, done = deploy_site(obj.config(), remote=remote, branch=branch, message=message, force=force)
    say(report.summary())
    say(done.summary())


@cli.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: [site] serve_port).")
@click.pass_obj
def serve(obj, port):
    """Preview the site on 127.0.0.1; rebuilds when content changes."""
    from pipeline import gallery

    cfg = obj.config(site__serve_port=port)
    gallery.serve(cfg)


# -- ranking drafts -----------------------------------------------------------------------------


@cli.command()
@click.option("--learn", is_flag=True, help="Fit the preference model on this folder's seeds.")
@click.option("--evaluate", is_flag=True, help="Report the preference model's quality on held-out marks.")
@click.option("--all", "rescore", is_flag=True, help="Rescore every draft, not only the unscored ones.")
@click.pass_obj
def rank(obj, learn, evaluate, rescore):
    """Score drafts (incrementally) so the good compositions come first."""
    from pipeline import ranking

    say(ranking.rank_command(obj.config(), learn=learn, evaluate=evaluate, rescore=rescore))


@cli.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: [score] review_port).")
@click.pass_obj
def review(obj, port):
    """A private page on 127.0.0.1: drafts by score, filters, seed/unseed buttons."""
    from pipeline import ranking

    ranking.review_command(obj.config(score__review_port=port))


@cli.command()
@click.pass_obj
def stats(obj):
    """Seed rate per random pick of the prompt template and per aspect ratio."""
    from pipeline import ranking

    click.echo(ranking.stats_report(obj.config()))


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aiimg: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AiimgError as exc:
        click.echo(f"aiimg: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: the traceback goes to the log, the user gets where to find it
        if logging.getLogger(logs.ROOT).isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        where = logs.traceback_to_file(f"unexpected {type(exc).__name__} in: aiimg {' '.join(sys.argv[1:])}")
        click.echo(
            f"aiimg: internal error: {type(exc).__name__}: {exc}"
            + (f" (traceback in {where})" if where else " (run with -v for the traceback)"),
            err=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
