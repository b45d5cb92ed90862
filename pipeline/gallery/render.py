"""Step 3 of the build: render every page from ``pipeline/site_templates`` into output/.

Site layout (all links between pages are relative, so the site works under any sub-path;
only canonical/Open Graph/feed/sitemap URLs are absolute, built from [site] base_url)::

    index.html                             the newest works: [site] page_size to twice that, less one
    page/<n>/index.html                    the older ones, page_size a page, numbered from the oldest
                                           (page/1/ holds the first works): a full page never
                                           changes when works are added (see list_pages)
    works/<id>/index.html                  one work: variations, draft, prompt, parameters,
                                           each variation's A1111 generation data
    tags/index.html                        the most used tags with their counts (TOP_TAGS)
    tags/by-name/index.html (+ page/<n>/)  every tag A-Z, TAG_LIST_SIZE a page (only when
                                           there are more than TOP_TAGS)
    tags/<slug>/index.html (+ page/<n>/)   the works with that tag, paginated like the index
    search/index.html                      the search page (only with the `search` extra; the
                                           index itself is made by search.py)
    feed.xml  sitemap.xml  robots.txt  404.html  favicon.svg  favicon.ico  .nojekyll
    assets/site-<hash>.css  assets/viewer-<hash>.js  (assets/search-<hash>.js)
                                           content-hashed: cache them forever

Templates get user text (prompts, tags, titles) raw; Jinja's autoescape escapes it for HTML
and XML alike. Tag slugs are ASCII made here, never the tag text itself.

A page is rendered only when its key changed: the key of a list page is made of its works'
digests (collect.Work), a work page's of its own digest, its neighbours' ids and its tags'
slugs, so that keeping 10,000 pages costs a hash each. A work's recipes are read for its own
page only (collect.load).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from PIL import Image

from pipeline import __version__, metadata
from pipeline.gallery import search
from pipeline.gallery.collect import Work, unload
from pipeline.gallery.i18n import format_date, strings
from pipeline.gallery.output import Output
from pipeline.gallery.stamp import digest_files, template_files
from pipeline.metadata import SAMPLER_NAMES, a1111_parameters

FEED_SIZE = 30  # newest works in feed.xml
# The grid's first row is its largest paint: those tiles load at once with fetchpriority=high,
# every other tile lazily. Its length is worked out as site.css lays it out (flex-basis =
# aspect ratio x --row, --gap between) at the widest the grid gets (main's max-width 1680px
# less 2rem of padding a side): the first row of any narrower window is a prefix of that one.
ROW_PX, GAP_PX, WIDEST_ROW_PX = 280, 6, 1616
TOP_TAGS = 100  # tags/ lists the most used ones; with more, tags/by-name/ lists them all A-Z
TAG_LIST_SIZE = 300  # tags a page of tags/by-name/: a compact list, no thumbnails
RESERVED_SLUGS = {"by-name"}  # tags/<slug>/ must not be the A-Z list's folder
SEARCH_BATCH = 40  # results the search page shows at a time (each loads a fragment of the index)


@dataclass
class Tag:
    name: str
    slug: str
    works: list[Work]


def render_site(works: list[Work], site, out: Output, load, problems: list[str]) -> None:
    """Every page whose key changed. ``load(work)``: read a work's recipes for its page
    (collect.load); a work that cannot be read now keeps its page as it was (a problem).
    The templates are compiled on every build (~0.1 s): no compiled code is kept on disk."""
    env = _environment(site)
    # with the search extra (and something to find): a search box on every page, the search page
    env.globals["search"] = bool(works) and search.available() is not None
    env.globals["assets"] = _assets(out, env.globals["search"])
    env.globals["env_key"] = _env_key(env, site)
    tags = _tags(works)
    _grid_pages(env, out, works, "", site.page_size)
    _work_pages(env, out, works, {t.name: t.slug for t in tags}, load, problems)
    _tag_pages(env, out, tags, site.page_size)
    if env.globals["search"]:
        # the search step's files (page, module, index) are written and counted by search.py
        page = env.get_template("search.html").render(root="../", path="search/", og_work=None, batch=SEARCH_BATCH)
        out.write("search/index.html", page, counted=False)
    _extras(env, out, works, tags)


def _environment(site) -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline", "site_templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    base = site.base_url if site.base_url.endswith("/") else site.base_url + "/"
    env.globals.update(
        site=site,
        t=strings(site.lang),
        lang=site.lang,
        base_url=base,
        base_path=urlsplit(base).path or "/",
        version=__version__,
    )
    env.filters["date"] = lambda iso: format_date(iso, site.lang)
    env.filters["sampler"] = lambda name: SAMPLER_NAMES.get(name, name)  # the name A1111 users know
    # what A1111 writes under an image (its prompt box and Civitai take it pasted whole); made
    # only for pages that are rendered: the key covers the recipes and metadata.py (_env_key)
    env.filters["infotext"] = a1111_parameters
    env.filters["srcset"] = lambda files, root: ", ".join(f"{root}{f} {w}w" for f, w, _ in files)
    return env


def _render(env: Environment, out: Output, template: str, path: str, parts: list[str], ctx: dict, lazy=None) -> None:
    """``path`` is the page's URL path under base_url ("" or "works/<id>/"); the file is
    <path>index.html. A page whose inputs (``parts``, see :func:`_key`) did not change since the
    last build is not rendered; ``lazy()``: more of its context, worked out only to render it."""
    rel, key = path + "index.html", _key(env, template, path, parts)
    if out.reuse_page(rel, key):
        return
    ctx = {**ctx, **(lazy() if lazy else {})}
    html = env.get_template(template).render(root="../" * path.count("/"), path=path, **ctx)
    out.write_page(rel, key, html)


def _key(env: Environment, template: str, path: str, parts: list[str]) -> str:
    """A page's key: of the templates and settings (``env_key``) and of everything it is made
    from (``parts``: a work is its digest, collect.Work). The parts hold no NUL (hex digests, ids,
    slugs, JSON), so joining them is unambiguous: 11,000 keys at 10,000 works, a hash each."""
    return hashlib.sha256("\0".join([env.globals["env_key"], template, path, *parts]).encode()).hexdigest()


def _json(data) -> str:
    return json.dumps(data, sort_keys=True)


def _env_key(env: Environment, site) -> str:
    """Everything every page depends on: templates, static files, settings, aiimg version (not
    where aiimg is installed: the keys are in the manifest, which is the same wherever it is)."""
    pages_depend_on = [dataclasses.asdict(site), __version__, env.globals["assets"], env.globals["search"]]
    digest = hashlib.sha256(json.dumps(pages_depend_on).encode())
    # metadata.py writes the infotexts
    digest_files(digest, [*template_files(), ("metadata.py", Path(metadata.__file__))])
    return digest.hexdigest()


# -- assets ----------------------------------------------------------------------------------


def _assets(out: Output, searching: bool) -> dict[str, str]:
    """Copy the CSS and JS under names carrying their hash; returns {"css": rel, "js": rel}
    (and "search": the search page's module, which viewer.js loads there only)."""
    names = {"css": _asset(out, "site.css", out.write), "js": _asset(out, "viewer.js", out.write)}
    if searching:
        names["search"] = _asset(out, "search.js", lambda rel, data: out.write(rel, data, counted=False))
    return names


def _asset(out: Output, name: str, write) -> str:
    data = _static(name)
    stem, ext = name.rsplit(".", 1)
    rel = f"assets/{stem}-{hashlib.sha256(data).hexdigest()[:10]}.{ext}"
    write(rel, data)
    return rel


def _static(name: str) -> bytes:
    return resources.files("pipeline").joinpath("site_templates", "static", name).read_bytes()


# -- pages -----------------------------------------------------------------------------------


def _grid_pages(env, out: Output, works: list[Work], base: str, size: int, tag: str | None = None):
    """A list of works, newest first (the index, or a tag's), paginated by :func:`list_pages`."""
    pages = list_pages(works, size)
    for i, (n, chunk) in enumerate(pages):
        page = {
            "n": n,  # 0: the first page
            "newer": _page_path(base, pages[i - 1][0]) if i > 0 else None,
            "older": _page_path(base, pages[i + 1][0]) if i + 1 < len(pages) else None,
        }
        count = len(works) if n == 0 else None  # the first page only: the others never change
        parts = [_json([page, tag, count]), *(w.digest for w in chunk)]
        ctx = {"works": chunk, "page": page, "tag": tag, "count": count, "og_work": chunk[0] if chunk else None}
        # the first row comes from the works' metas (in their digests): read only for a page made now
        lazy = functools.partial(_eager, chunk if n == 0 else [])
        _render(env, out, "grid.html", _page_path(base, n), parts, ctx, lazy)


def _eager(works: list[Work]) -> dict:
    return {"eager": first_row(works)}


def list_pages(works: list[Work], size: int) -> list[tuple[int, list[Work]]]:
    """(number, works) of each page of a list of works, newest first, in the order they are
    browsed. The first page (number 0: the list's index.html) holds the newest works; the
    others hold ``size`` works each and are numbered from the oldest (page 1: the first works),
    so a full page never changes when works are added, and the next build renders only the
    first page again: the first page holds ``size`` to ``2 * size - 1`` works (all of them when
    there are fewer), and when it would reach ``2 * size`` its older half becomes the next page."""
    total = len(works)
    full = max(0, total // size - 1)
    pages = [(0, works[: total - full * size])]
    return pages + [(k, works[total - k * size : total - (k - 1) * size]) for k in range(full, 0, -1)]


def first_row(works: list[Work]) -> int:
    """How many tiles the grid's first row holds at its widest (see ROW_PX): at least one."""
    used, count = 0.0, 0
    for work in works:
        _, w, h = work.cover_meta["thumb"][0]
        basis = w / h * ROW_PX
        if count and used + GAP_PX + basis > WIDEST_ROW_PX:
            break
        used += (GAP_PX if count else 0) + basis
        count += 1
    return count


def _page_path(base: str, n: int) -> str:
    return f"{base}page/{n}/" if n else base


def _work_pages(env, out: Output, works: list[Work], slugs: dict[str, str], load, problems: list[str]) -> None:
    for i, work in enumerate(works):
        newer = works[i - 1].id if i > 0 else None
        older = works[i + 1].id if i + 1 < len(works) else None
        path = f"works/{work.id}/"
        parts = [work.digest, newer or "", older or "", *(slugs[t] for t in work.tags)]
        rel, key = path + "index.html", _key(env, "work.html", path, parts)
        if out.reuse_page(rel, key):
            continue
        if not load(work):
            problems.append(f"{work.id}: changed while the site was built; its page is made at the next build")
            out.keep_previous(rel)
            continue
        ctx = {"work": work, "newer": newer, "older": older, "prompts": _prompt_groups(work), "og_work": work}
        html = env.get_template("work.html").render(root="../../", path=path, slugs=slugs, **ctx)
        out.write_page(rel, key, html)
        unload(work)


def _prompt_groups(work: Work) -> list[dict]:
    """Variations sharing one prompt + negative prompt (usually all of them), in order."""
    groups: dict[tuple, dict] = {}
    for v in work.variations:
        key = (str(v.recipe.get("prompt", "")), str(v.recipe.get("negative_prompt", "")))
        groups.setdefault(key, {"prompt": key[0], "negative": key[1], "indices": []})["indices"].append(
            v.recipe.get("index", v.picture.stem)
        )
    return list(groups.values())


def _tag_pages(env, out: Output, tags: list[Tag], size: int) -> None:
    for tag in tags:
        _grid_pages(env, out, tag.works, f"tags/{tag.slug}/", size, tag=tag.name)
    # names, slugs and counts only: thousands of tags make a list of links, never of thumbnails
    rows = [{"name": t.name, "slug": t.slug, "count": len(t.works)} for t in tags]
    top = sorted(rows, key=lambda r: (-r["count"], r["name"]))[:TOP_TAGS]
    chunks = _by_name_chunks(rows) if len(rows) > TOP_TAGS else []
    ctx = {"tags": top, "total": len(rows), "by_name": bool(chunks), "page": None}
    _render(env, out, "tags.html", "tags/", [_json(ctx)], {**ctx, "og_work": None})
    for n, chunk in enumerate(chunks, 1):
        page = {
            "n": n,
            "total": len(chunks),
            "newer": _by_name_path(n - 1) if n > 1 else None,
            "older": _by_name_path(n + 1) if n < len(chunks) else None,
        }
        ctx = {"tags": chunk, "total": len(rows), "by_name": True, "page": page}
        _render(env, out, "tags.html", _by_name_path(n), [_json(ctx)], {**ctx, "og_work": None})


def _by_name_path(n: int) -> str:
    """tags/by-name/ is its first page, tags/by-name/page/2/ the next (A-Z: they all shift anyway)."""
    return "tags/by-name/" if n == 1 else f"tags/by-name/page/{n}/"


def _by_name_chunks(rows: list[dict]) -> list[list[dict]]:
    ordered = sorted(rows, key=lambda r: (r["name"].casefold(), r["name"]))
    return [ordered[i : i + TAG_LIST_SIZE] for i in range(0, len(ordered), TAG_LIST_SIZE)]


def _tags(works: list[Work]) -> list[Tag]:
    by_name: dict[str, list[Work]] = {}
    for work in works:
        for name in work.tags:
            by_name.setdefault(name, []).append(work)
    slugs = _slugs(sorted(by_name))
    return [Tag(name, slugs[name], by_name[name]) for name in sorted(by_name)]


def _slugs(names: list[str]) -> dict[str, str]:
    """ASCII slugs, unique: a hash suffix when the name is not ASCII or two names collide."""
    plain = {n: re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-")[:48] for n in names}
    counts: dict[str, int] = {}
    for s in plain.values():
        counts[s] = counts.get(s, 0) + 1
    return {
        n: s if s and counts[s] == 1 and n.isascii() and s not in RESERVED_SLUGS else _hashed(s, n)
        for n, s in plain.items()
    }


def _hashed(slug: str, name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"t-{digest}"


# -- feed, sitemap and the small files -------------------------------------------------------


def _extras(env, out: Output, works: list[Work], tags: list[Tag]) -> None:
    newest = max((w.updated for w in works), default="1970-01-01T00:00:00Z")
    out.write("feed.xml", env.get_template("feed.xml").render(works=works[:FEED_SIZE], updated=newest))
    pages = _sitemap_pages(works, tags, env.globals["site"].page_size)
    out.write("sitemap.xml", env.get_template("sitemap.xml").render(pages=pages))
    out.write("robots.txt", env.get_template("robots.txt").render())
    out.write(
        "404.html", env.get_template("404.html").render(root=env.globals["base_path"], path="404.html", og_work=None)
    )
    out.write("favicon.svg", _static("favicon.svg"))
    out.write("favicon.ico", _favicon_ico())
    out.write(".nojekyll", b"")  # GitHub Pages: serve the files as they are, no Jekyll pass


def _sitemap_pages(works: list[Work], tags: list[Tag], size: int) -> list[tuple[str, str]]:
    """(path, lastmod) for every HTML page; lastmod is content time, never build time: the
    newest update of what the page shows."""
    newest = max((w.updated for w in works), default="")
    pages = _list_lastmods(works, "", size) or [("", "")]
    pages += [(f"works/{w.id}/", w.updated) for w in works]
    pages.append(("tags/", newest))
    if len(tags) > TOP_TAGS:
        pages += [(_by_name_path(n), newest) for n in range(1, -(-len(tags) // TAG_LIST_SIZE) + 1)]
    for tag in tags:
        pages += _list_lastmods(tag.works, f"tags/{tag.slug}/", size)
    return pages


def _list_lastmods(works: list[Work], base: str, size: int) -> list[tuple[str, str]]:
    return [(_page_path(base, n), max(w.updated for w in chunk)) for n, chunk in list_pages(works, size) if chunk]


def _favicon_ico() -> bytes:
    """A 32x32 ICO for browsers and crawlers that ask for /favicon.ico whatever the page says."""
    img = Image.new("RGB", (32, 32), (24, 24, 27))
    img.paste((214, 170, 110), (9, 9, 23, 23))
    buf = io.BytesIO()
    img.save(buf, format="ICO", sizes=[(32, 32)])
    return buf.getvalue()
