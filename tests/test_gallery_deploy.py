"""`aiimg deploy` against a real git: a bare repository in tmp_path stands for GitHub. And the
Actions workflow's build, run on a repository that holds only content/works."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gallery_fixtures import add_work, run_cli, write_config

from pipeline.content import Content
from pipeline.gallery.deploy import pages_url, same_site

ROOT = Path(__file__).resolve().parents[1]
GITHUB = "https://github.com/user/repo.git"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def git_identity(tmp_path, monkeypatch):
    """A git of its own: no system or user config (signing, hooks, excludes) reaches the tests."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Tester\n\temail = tester@example.com\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path):
    """A creator's gallery repository: aiimg.toml, content/ (works committed, drafts private),
    its main branch committed, and a bare "remote" that is pushed to through origin's pushurl
    while origin's url says github.com/user/repo (so base_url is checked as for GitHub)."""
    site, remote = tmp_path / "site", tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "-q", str(remote))
    git(tmp_path, "init", "-q", str(site))
    for i in range(3):
        add_work(site / "content", i, in_work=True)
    write_config(site, base_url="https://user.github.io/repo/")
    (site / ".gitignore").write_text("/output/\n/content/drafts/\n/content/.aiimg/\n")
    git(site, "add", "-A")
    git(site, "commit", "-q", "-m", "my gallery")
    git(site, "remote", "add", "origin", GITHUB)
    git(site, "remote", "set-url", "--push", "origin", str(remote))
    git(site, "config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
    # fetches go to the bare repository too (the url is only what is checked)
    git(site, "config", f"url.{remote}.insteadOf", GITHUB)
    return site, remote


def deploy(monkeypatch, capsys, site: Path, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(site)
    return run_cli(monkeypatch, capsys, "--config", str(site / "aiimg.toml"), "deploy", *args)


def published(remote: Path, branch: str = "gh-pages") -> list[str]:
    return sorted(git(remote, "ls-tree", "-r", "--name-only", branch).splitlines())


def output_files(site: Path) -> list[str]:
    out = site / "output"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def commits(remote: Path, branch: str = "gh-pages") -> list[str]:
    return git(remote, "rev-list", branch).splitlines()


def test_deploy_pushes_exactly_output_and_nothing_of_content(repo, monkeypatch, capsys):
    site, remote = repo
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 0, said
    assert "3 works: 3 built" in said  # it builds first
    assert re.search(r"deployed: \d+ files in commit [0-9a-f]{10} to gh-pages on origin", said)
    assert "the site: https://user.github.io/repo/" in said
    files = published(remote)
    assert files == output_files(site) and ".nojekyll" in files and "index.html" in files
    assert git(remote, "for-each-ref", "--format=%(refname)") == "refs/heads/gh-pages"  # not main
    assert len(commits(remote)) == 1
    # no object of the repository's own commits travelled: not content/, not the drafts' recipes
    wid = Content(site / "content").works()[0]
    for private in (f"content/works/{wid}/work.json", f"content/works/{wid}/draft.json", "aiimg.toml"):
        blob = git(site, "rev-parse", f"HEAD:{private}")
        assert subprocess.run(["git", "cat-file", "-e", blob], cwd=remote).returncode != 0, private
    draft_recipe = Content(site / "content").draft(wid).recipe_path
    blob = git(site, "hash-object", str(draft_recipe))
    assert subprocess.run(["git", "cat-file", "-e", blob], cwd=remote).returncode != 0
    # the repository itself is as it was: same branch, clean work tree and index
    assert git(site, "branch", "--show-current") == "main" and git(site, "status", "--porcelain") == ""
    assert git(site, "rev-parse", "gh-pages") == commits(remote)[0]  # the local branch follows


def test_a_second_deploy_adds_one_commit_and_an_unchanged_site_none(repo, monkeypatch, capsys):
    site, remote = repo
    assert deploy(monkeypatch, capsys, site)[0] == 0
    first = commits(remote)
    add_work(site / "content", 3, in_work=True)
    code, said = deploy(monkeypatch, capsys, site, "-m", "one more")
    assert code == 0, said
    after = commits(remote)
    assert len(after) == 2 and after[1:] == first  # on top of the first: a fast-forward
    assert git(remote, "log", "-1", "--format=%s", "gh-pages") == "one more"
    new = Content(site / "content").works()[3]
    assert published(remote) == output_files(site) and f"works/{new}/index.html" in published(remote)
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 0 and "nothing to deploy: gh-pages on origin" in said
    assert commits(remote) == after


def test_deploy_builds_on_what_the_remote_has_and_never_forces(repo, monkeypatch, capsys, tmp_path):
    site, remote = repo
    assert deploy(monkeypatch, capsys, site)[0] == 0
    other = tmp_path / "other"  # someone else adds a file to gh-pages meanwhile
    git(tmp_path, "clone", "-q", "-b", "gh-pages", str(remote), str(other))
    (other / "extra.txt").write_text("theirs\n")
    git(other, "add", "extra.txt")
    git(other, "commit", "-q", "-m", "theirs")
    git(other, "push", "-q", "origin", "gh-pages")
    theirs = commits(remote)[0]
    add_work(site / "content", 3, in_work=True)
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 0, said
    assert commits(remote)[1] == theirs  # their commit is kept in the history, not overwritten
    assert "extra.txt" not in published(remote)  # the tree is output/ as it is


def test_deploy_refuses_a_base_url_github_will_not_serve_the_site_at(repo, monkeypatch, capsys):
    site, remote = repo
    write_config(site, base_url="https://example.github.io/gallery/")
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 1
    assert 'base_url = "https://example.github.io/gallery/", but origin' in said
    assert 'set base_url = "https://user.github.io/repo/"' in said and "--force" in said
    assert not (site / "output").exists()  # checked before anything is built or pushed
    assert git(remote, "for-each-ref") == ""
    code, said = deploy(monkeypatch, capsys, site, "--force")
    assert code == 0 and "--force: deploying although" in said
    assert published(remote) == output_files(site)


def test_a_custom_domain_in_output_cname_is_the_address_to_match(repo, monkeypatch, capsys):
    site, remote = repo
    (site / "output").mkdir()
    (site / "output/CNAME").write_text("gallery.example.com\n")
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 1 and "served by GitHub Pages at https://gallery.example.com/" in said
    write_config(site, base_url="https://gallery.example.com/")
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 0, said
    assert "CNAME" in published(remote)  # the creator's file goes with the site


def test_deploy_refuses_a_site_over_its_size_budget(repo, monkeypatch, capsys):
    site, remote = repo
    write_config(site, base_url="https://user.github.io/repo/", max_size_mb=1)
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 1 and "over [site] max_size_mb = 1" in said and "--force" in said
    assert git(remote, "for-each-ref") == ""


def test_deploy_says_what_is_missing(tmp_path, monkeypatch, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    write_config(lone)
    code, said = deploy(monkeypatch, capsys, lone)
    assert code == 1 and "is not in a git repository" in said
    git(lone, "init", "-q")
    code, said = deploy(monkeypatch, capsys, lone)
    assert code == 1 and "no git remote 'origin'" in said and "git remote add origin" in said


def test_a_token_in_the_remote_url_is_never_printed(repo, monkeypatch, capsys):
    site, _ = repo
    git(site, "remote", "set-url", "origin", "https://ghp_SECRET@github.com/user/repo.git")
    git(site, "config", f"url.{repo[1]}.insteadOf", "https://ghp_SECRET@github.com/user/repo.git")
    code, said = deploy(monkeypatch, capsys, site)
    assert code == 0, said
    assert "ghp_SECRET" not in said and "(https://github.com/user/repo.git)" in said


def test_a_remote_not_on_github_is_deployed_without_the_check(repo, monkeypatch, capsys):
    site, remote = repo
    git(site, "remote", "add", "mirror", str(remote))
    code, said = deploy(monkeypatch, capsys, site, "--remote", "mirror", "--branch", "pages")
    assert code == 0, said
    assert f"base_url not checked: mirror ({remote}) is not on github.com" in said
    assert published(remote, "pages") == output_files(site)


@pytest.mark.parametrize(
    "url,cname,expected",
    [
        ("https://github.com/User/Repo.git", "", "https://user.github.io/Repo/"),
        ("https://github.com/user/repo", "", "https://user.github.io/repo/"),
        ("git@github.com:user/my.site.git", "", "https://user.github.io/my.site/"),
        ("ssh://git@github.com/user/repo.git", "", "https://user.github.io/repo/"),
        ("https://token@github.com/user/repo.git", "", "https://user.github.io/repo/"),
        ("git@github.com:User/user.github.io.git", "", "https://user.github.io/"),
        ("git@github.com:user/repo.git", "Art.Example.com", "https://art.example.com/"),
        ("https://gitlab.com/user/repo.git", "", ""),
        ("/srv/git/repo.git", "", ""),
    ],
)
def test_the_pages_address_of_a_remote(url, cname, expected):
    assert pages_url(url, cname) == expected


def test_same_site_ignores_scheme_case_and_the_trailing_slash():
    assert same_site("http://User.github.io/Repo", "https://user.github.io/repo/")
    assert not same_site("https://user.github.io/repo/sub/", "https://user.github.io/repo/")
    assert not same_site("https://user.github.io/", "https://user.github.io/repo/")


def test_the_pages_workflow_builds_from_content_works_alone(tmp_path):
    """What .github/workflows/pages.yml runs, on a checkout that holds aiimg.toml and content/works
    only (content/drafts is private: aiimg init ignores it)."""
    workflow = (ROOT / ".github/workflows/pages.yml").read_text(encoding="utf-8")
    runs = re.findall(r"^\s*- run: (aiimg build .*)$", workflow, re.MULTILINE)
    assert len(runs) == 1 and "content" not in runs[0]  # it builds what aiimg.toml names
    command = runs[0].replace('"${{ steps.pages.outputs.base_url }}/"', "https://user.github.io/repo/")
    for i in range(2):
        add_work(tmp_path / "content", i, in_work=True, in_drafts=False)
    write_config(tmp_path)
    assert not (tmp_path / "content/drafts").exists()
    args = command.split()[1:]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(tmp_path / "aiimg.toml"), *args, "--strict"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "problem" not in done.stdout and "2 works: 2 built" in done.stdout
    for wid in Content(tmp_path / "content").works():
        page = (tmp_path / "output/works" / wid / "index.html").read_text(encoding="utf-8")
        assert 'class="lineage-draft"' in page  # each work's draft, from its own folder
