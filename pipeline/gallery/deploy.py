"""`aiimg deploy`: publish output/ on the ``gh-pages`` branch, as `mkdocs gh-deploy` does with
ghp-import, with plain ``git`` (no dependency; git itself must be installed).

1. The remote's GitHub Pages address is worked out from its URL (``github.com/user/repo`` ->
   ``https://user.github.io/repo/``; ``user/user.github.io`` -> ``https://user.github.io/``; a
   domain in ``output/CNAME`` -> ``https://<domain>/``) and compared with [site] base_url: a
   site built for another address has broken feed, sitemap, Open Graph and 404 links, so a
   mismatch is an error (``--force`` deploys anyway). A remote that is not on github.com is not
   checked (it is said).
2. The site is built (incrementally: an unchanged site stops at its stamp), so what is pushed is
   current and made with that base_url, never the preview's (`aiimg serve` builds for
   127.0.0.1). A site over [site] max_size_mb is refused (GitHub Pages publishes 1 GB at most)
   unless ``--force``.
3. One commit whose tree is exactly output/'s files (``.nojekyll`` included, nothing else: not
   content/, not the repository's own files) is made on top of the branch as the remote has it
   (fetched first). It is staged in a private index file in the git folder, so the repository's
   work tree, index, HEAD and current branch are never touched, and the next deploy only stats
   the files that did not change. No change since the branch's last commit: no commit.
4. It is pushed without force, so it can only fast-forward the remote's branch; then the local
   branch is moved to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import __version__
from pipeline.errors import AiimgError

# https://github.com/u/r(.git), git@github.com:u/r(.git), ssh://git@github.com[:22]/u/r(.git), git://...
_GITHUB = re.compile(
    r"^(?:(?:https?|ssh|git)://(?:[^@/]+@)?github\.com(?::\d+)?/|[^@/]+@github\.com:)"
    r"(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+?)(?:\.git)?/?$",
    re.IGNORECASE,
)


@dataclass
class Deployed:
    remote: str
    url: str  # the remote's URL
    branch: str
    commit: str = ""  # "" when nothing changed
    files: int = 0
    pages_url: str = ""  # where GitHub Pages serves it ("" when the remote is not on github.com)
    note: str = ""

    def summary(self) -> str:
        lines = [self.note] if self.note else []
        where = f"{self.branch} on {self.remote} ({self.url})"
        if self.commit:
            lines.append(f"deployed: {self.files} files in commit {self.commit[:10]} to {where}")
        else:
            lines.append(f"nothing to deploy: {where} already holds this output/")
        if self.pages_url:
            lines.append(f"the site: {self.pages_url} (Settings -> Pages -> Deploy from a branch: {self.branch})")
        return "\n".join(lines)


def pages_url(remote_url: str, cname: str = "") -> str:
    """Where GitHub Pages serves a repository's site, or "" for a remote not on github.com."""
    m = _GITHUB.match(remote_url.strip())
    if not m:
        return ""
    if cname:
        return f"https://{cname.strip().lower()}/"
    owner, repo = m["owner"].lower(), m["repo"]
    if repo.lower() == f"{owner}.github.io":
        return f"https://{owner}.github.io/"
    return f"https://{owner}.github.io/{repo}/"


def same_site(base_url: str, expected: str) -> bool:
    """Host and path alike (case aside: GitHub's names are not case-sensitive); http or https."""
    a, b = urlsplit(base_url), urlsplit(expected)
    path = lambda p: (p.path.rstrip("/") + "/").lower()  # noqa: E731
    return a.netloc.lower() == b.netloc.lower() and path(a) == path(b)


def deploy(cfg, remote: str = "origin", branch: str = "gh-pages", message: str | None = None, force: bool = False):
    """Check, build, commit and push; returns (BuildReport, Deployed). AiimgError for anything
    that stops it, saying what to do."""
    from pipeline.gallery import build_site

    git = _Git(Path(cfg.root))
    raw = git.remote_url(remote)
    url = re.sub(r"^(\w+://)[^@/]*@", r"\1", raw)  # as said: no token from an https://TOKEN@github.com URL
    out = Path(cfg.output_dir)
    expected = pages_url(raw, _cname(out))
    note = _check_base_url(cfg.site.base_url, expected, remote, url, force)
    report = build_site(cfg)
    if report.over_budget and not force:
        raise AiimgError(
            f"{out} is {report.total_bytes / 1e6:,.1f} MB, over [site] max_size_mb = {cfg.site.max_size_mb}: "
            f"GitHub Pages publishes a site of at most 1 GB. Make room (see the warning above) or deploy anyway "
            f"with --force"
        )
    done = Deployed(remote, url, branch, pages_url=expected, note=note)
    parent = git.branch_tip(remote, branch)
    tree, done.files = git.tree_of(out, branch)
    if parent and git.run("rev-parse", f"{parent}^{{tree}}") == tree:
        return report, done
    message = message or f"aiimg deploy: {report.works} works ({git.source()}aiimg {__version__})"
    done.commit = git.run("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)
    git.push(remote, done.commit, branch)
    git.run("update-ref", f"refs/heads/{branch}", done.commit)
    return report, done


def _cname(out: Path) -> str:
    """The custom domain in output/CNAME (its first line), or ""."""
    try:
        lines = (out / "CNAME").read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return ""
    return lines[0] if lines else ""


def _check_base_url(base_url: str, expected: str, remote: str, url: str, force: bool) -> str:
    """A note to print, or an AiimgError for a base_url GitHub Pages will not serve the site at."""
    if not expected:
        return f"base_url not checked: {remote} ({url}) is not on github.com"
    if same_site(base_url, expected):
        return ""
    if force:
        return f"--force: deploying although [site] base_url = {base_url} and GitHub Pages serves this at {expected}"
    raise AiimgError(
        f'[site] base_url = "{base_url}", but {remote} ({url}) is served by GitHub Pages at {expected}: '
        f'set base_url = "{expected}" in aiimg.toml (for a custom domain, put it in output/CNAME and in '
        f"base_url), or deploy anyway with --force"
    )


class _Git:
    """``git`` in the repository that holds aiimg.toml; every failure an AiimgError with git's words."""

    def __init__(self, where: Path):
        self.cwd = where
        top = self.run(
            "rev-parse",
            "--show-toplevel",
            what=f"{where} is not in a git repository (aiimg deploy pushes output/ to a branch of the "
            f"repository that holds aiimg.toml: git init, git remote add origin ...)",
        )
        self.cwd = Path(top)
        self.git_dir = Path(self.run("rev-parse", "--absolute-git-dir"))

    def run(self, *args: str, env: dict | None = None, what: str = "", cwd: Path | None = None) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd or self.cwd,
                capture_output=True,
                text=True,
                env={**os.environ, **(env or {})},  # git asks for credentials on the terminal itself
            )
        except FileNotFoundError:
            raise AiimgError("git is not installed: aiimg deploy pushes with git") from None
        if done.returncode:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise AiimgError(f"{what or 'git ' + ' '.join(args[:2])}: {' '.join(said[-3:]) or 'failed'}")
        return done.stdout.strip()

    def remote_url(self, remote: str) -> str:
        names = self.run("remote").split()
        if remote not in names:
            hint = f" (this repository has: {', '.join(names)})" if names else ""
            raise AiimgError(
                f"no git remote {remote!r}{hint}: add one (git remote add {remote} https://github.com/USER/REPO.git) "
                f"or name another with --remote"
            )
        # as configured, before any url.*.insteadOf rewriting (an ssh rewrite of a github.com
        # URL is still that repository)
        return self.run("config", "--get", f"remote.{remote}.url")

    def branch_tip(self, remote: str, branch: str) -> str:
        """The branch's commit as the remote has it (fetched), else as this repository has it, else ""."""
        heads = self.run("ls-remote", "--heads", remote, f"refs/heads/{branch}", what=f"cannot reach {remote}")
        if heads:
            self.run("fetch", "--quiet", "--no-tags", remote, f"refs/heads/{branch}", what=f"cannot fetch {branch}")
            return heads.split()[0]
        try:
            return self.run("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
        except AiimgError:
            return ""

    def tree_of(self, folder: Path, branch: str) -> tuple[str, int]:
        """(tree id, files) of exactly the files in ``folder``, staged in a private index: its
        stat cache spares re-hashing unchanged files on the next deploy. -f: no ignore rule of
        the repository or the user applies (output/ is published whole)."""
        name = hashlib.sha256(f"{folder.resolve()}|{branch}".encode()).hexdigest()[:12]
        env = {"GIT_INDEX_FILE": str(self.git_dir / f"aiimg-deploy-{name}.index")}
        work = ["--git-dir", str(self.git_dir), "--work-tree", str(folder.resolve())]
        no_filters = ["-c", "core.autocrlf=false", "-c", "core.safecrlf=false"]  # the bytes as they are
        add = [*no_filters, *work, "add", "--all", "--force", "--", "."]
        self.run(*add, env=env, what=f"cannot stage {folder}", cwd=folder)
        tree = self.run(*work, "write-tree", env=env, cwd=folder)
        files = len(self.run(*work, "ls-files", env=env, cwd=folder).splitlines())
        return tree, files

    def push(self, remote: str, commit: str, branch: str) -> None:
        self.run(
            "push",
            "--quiet",
            remote,
            f"{commit}:refs/heads/{branch}",
            what=f"the push to {remote} was refused (someone pushed to {branch} meanwhile? run aiimg deploy again)",
        )

    def source(self) -> str:
        """``from <commit> `` of the repository's HEAD, for the deploy's commit message."""
        try:
            return f"from {self.run('rev-parse', '--short', 'HEAD')}, "
        except AiimgError:
            return ""
