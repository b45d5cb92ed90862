"""Step 3 of the build: render every page from ``pipeline/site_templates`` into output/.

Site layout (all links between pages are relative, so the site works under any sub-path;
only canonical/Open Graph/feed/sitemap URLs are absolute, built from [site] base_url)::

    index.html, page/<n>/index.html        the works, newest first, [site] page_size a page
    works/<id>/index.html                  one work: variations, draft, prompt, parameters,
                                           each variation's A1111 generation data
    tags/index.html                        the most used tags with their counts (TOP_TAGS)
    tags/by-name/index.html (+ page/<n>/)  every tag A-Z, TAG_LIST_SIZE a page (only when
                                           there are more than TOP_TAGS)
    tags/<slug>/index.html (+ page/<n>/)   the works with that tag, [site] page_size a page
    search/index.html                      the search page (only with the `search` extra; the
                                           index itself is made by search.py)
    feed.xml  sitemap.xml  robots.txt  404.html  favicon.svg  favicon.ico  .nojekyll
    assets/site-<hash>.css  assets/viewer-<hash>.js  (assets/search-<hash>.js)
                                           content-hashed: cache them forever

Templates get user text (prompts, tags, titles) raw; Jinja's autoescape escapes it for HTML
and XML alike. Tag slugs are ASCII made here, never the tag text itself.
"""

from __future__ import annotations

import dataclasses
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
from pipeline.gallery.collect import Picture, Work
from pipeline.gallery.i18n import format_date, strings
from pipeline.gallery.output import Output
from pipeline.gallery.stamp import template_files
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


def render_site(works: list[Work], site, out: Output) -> None:
    env = _environment(site)
    # with the search extra (and something to find): a search box on every page, the search page
    env.globals["search"] = bool(works) and search.available() is not None
    env.globals["assets"] = _assets(out, env.globals["search"])
    env.globals["env_key"] = _env_key(env, site)
    tags = _tags(works)
    _grid_pages(env, out, works, "", site.page_size, heading=None)
    _work_pages(env, out, works, {t.name: t.slug for t in tags})
    _tag_pages(env, out, tags, site.page_size)
    if env.globals["search"]:
        # the search step's files (page, module, index) are written and counted by search.py
        page = env.get_template("search.html").render(root="../", path="search/", og_work=None, batch=SEARCH_BATCH)
        search.write_file(out, "search/index.html", page.encode("utf-8"))
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


def _render(env: Environment, out: Output, template: str, path: str, **ctx) -> None:
    """``path`` is the page's URL path under base_url ("" or "works/<id>/"); the file is
    <path>index.html. A page whose inputs did not change since the last build is not rendered."""
    rel, key = path + "index.html", _page_key(env, template, path, ctx)
    if out.reuse_page(rel, key):
        return
    html = env.get_template(template).render(root="../" * path.count("/"), path=path, **ctx)
    out.write_page(rel, key, html)


def _page_key(env: Environment, template: str, path: str, ctx: dict) -> str:
    text = json.dumps([env.globals["env_key"], template, path, ctx], default=_plain, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(obj):
    """JSON for what pages are made of; a work (on many pages) is hashed once per build."""
    if isinstance(obj, Picture):  # where the source lies does not show on any page
        return {k: v for k, v in obj.__dict__.items() if k != "src"}
    if isinstance(obj, Work):
        if "_key" not in obj.__dict__:
            text = json.dumps(dict(obj.__dict__), default=_plain, sort_keys=True)
            obj.__dict__["_key"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return obj.__dict__["_key"]
    return obj.__dict__


def _env_key(env: Environment, site) -> str:
    """Everything every page depends on: templates, static files, settings, aiimg version."""
    pages_depend_on = [dataclasses.asdict(site), __version__, env.globals["assets"], env.globals["search"]]
    digest = hashlib.sha256(json.dumps(pages_depend_on).encode())
    for path in [*template_files(), Path(metadata.__file__)]:  # metadata.py writes the infotexts
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


# -- assets ----------------------------------------------------------------------------------


def _assets(out: Output, searching: bool) -> dict[str, str]:
    """Copy the CSS and JS under names carrying their hash; returns {"css": rel, "js": rel}
    (and "search": the search page's module, which viewer.js loads there only)."""
    names = {"css": _asset(out, "site.css", out.write), "js": _asset(out, "viewer.js", out.write)}
    if searching:
        names["search"] = _asset(out, "search.js", lambda rel, data: search.write_file(out, rel, data))
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


def _grid_pages(env, out: Output, works: list[Work], base: str, size: int, heading, tag: Tag | None = None):
    chunks = [works[i : i + size] for i in range(0, len(works), size)] or [[]]
    for n, chunk in enumerate(chunks, 1):
        page = {
            "n": n,
            "total": len(chunks),
            "newer": _page_path(base, n - 1) if n > 1 else None,
            "older": _page_path(base, n + 1) if n < len(chunks) else None,
        }
        _render(
            env,
            out,
            "grid.html",
            _page_path(base, n),
            works=chunk,
            page=page,
            heading=heading,
            tag=tag,
            eager=first_row(chunk) if n == 1 else 0,
            og_work=chunk[0] if chunk else None,
        )


def first_row(works: list[Work]) -> int:
    """How many tiles the grid's first row holds at its widest (see ROW_PX): at least one."""
    used, count = 0.0, 0
    for work in works:
        _, w, h = work.cover.picture.meta["thumb"][0]
        basis = w / h * ROW_PX
        if count and used + GAP_PX + basis > WIDEST_ROW_PX:
            break
        used += (GAP_PX if count else 0) + basis
        count += 1
    return count


def _page_path(base: str, n: int) -> str:
    return base if n == 1 else f"{base}page/{n}/"


def _work_pages(env, out: Output, works: list[Work], slugs: dict[str, str]) -> None:
    for i, work in enumerate(works):
        newer = works[i - 1] if i > 0 else None
        older = works[i + 1] if i + 1 < len(works) else None
        _render(
            env,
            out,
            "work.html",
            f"works/{work.id}/",
            work=work,
            newer=newer,
            older=older,
            prompts=_prompt_groups(work),
            og_work=work,
            slugs=slugs,
        )


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
        _grid_pages(env, out, tag.works, f"tags/{tag.slug}/", size, heading=tag.name, tag=tag)
    # names, slugs and counts only: thousands of tags make a list of links, never of thumbnails
    rows = [{"name": t.name, "slug": t.slug, "count": len(t.works)} for t in tags]
    top = sorted(rows, key=lambda r: (-r["count"], r["name"]))[:TOP_TAGS]
    chunks = _by_name_chunks(rows) if len(rows) > TOP_TAGS else []
    _render(env, out, "tags.html", "tags/", tags=top, total=len(rows), by_name=bool(chunks), page=None, og_work=None)
    for n, chunk in enumerate(chunks, 1):
        page = {
            "n": n,
            "total": len(chunks),
            "newer": _page_path("tags/by-name/", n - 1) if n > 1 else None,
            "older": _page_path("tags/by-name/", n + 1) if n < len(chunks) else None,
        }
        path = _page_path("tags/by-name/", n)
        _render(env, out, "tags.html", path, tags=chunk, total=len(rows), by_name=True, page=page, og_work=None)


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
    """(path, lastmod) for every HTML page; lastmod is content time, never build time."""
    newest = max((w.updated for w in works), default="")
    pages = [(_page_path("", n), newest) for n in range(1, max(1, -(-len(works) // size)) + 1)]
    pages += [(f"works/{w.id}/", w.updated) for w in works]
    pages.append(("tags/", newest))
    if len(tags) > TOP_TAGS:
        pages += [(_page_path("tags/by-name/", n), newest) for n in range(1, -(-len(tags) // TAG_LIST_SIZE) + 1)]
    for tag in tags:
        last = max(w.updated for w in tag.works)
        pages += [(_page_path(f"tags/{tag.slug}/", n), last) for n in range(1, -(-len(tag.works) // size) + 1)]
    return pages


def _favicon_ico() -> bytes:
    """A 32x32 ICO for browsers and crawlers that ask for /favicon.ico whatever the page says."""
    img = Image.new("RGB", (32, 32), (24, 24, 27))
    img.paste((214, 170, 110), (9, 9, 23, 23))
    buf = io.BytesIO()
    img.save(buf, format="ICO", sizes=[(32, 32)])
    return buf.getvalue()
