"""Step 3 of the build: render every page from ``pipeline/site_templates`` into output/.

Site layout (all links between pages are relative, so the site works under any sub-path;
only canonical/Open Graph/feed/sitemap URLs are absolute, built from [site] base_url)::

    index.html, page/<n>/index.html        the works, newest first, [site] page_size a page
    works/<id>/index.html                  one work: variations, draft, prompt, parameters
    tags/index.html                        every tag with its count
    tags/<slug>/index.html (+ page/<n>/)   the works with that tag
    feed.xml  sitemap.xml  robots.txt  404.html  favicon.svg  favicon.ico  .nojekyll
    assets/site-<hash>.css  assets/viewer-<hash>.js   content-hashed: cache them forever

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
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from PIL import Image

from pipeline import __version__
from pipeline.gallery.collect import Picture, Work
from pipeline.gallery.i18n import format_date, strings
from pipeline.gallery.output import Output
from pipeline.gallery.stamp import template_files
from pipeline.metadata import SAMPLER_NAMES

FEED_SIZE = 30  # newest works in feed.xml
EAGER_TILES = 8  # tiles above the first screen: loaded at once, not lazily


@dataclass
class Tag:
    name: str
    slug: str
    works: list[Work]


def render_site(works: list[Work], site, out: Output) -> None:
    env = _environment(site)
    env.globals["assets"] = _assets(out)
    env.globals["env_key"] = _env_key(env, site)
    tags = _tags(works)
    _grid_pages(env, out, works, "", site.page_size, heading=None)
    _work_pages(env, out, works, {t.name: t.slug for t in tags})
    _tag_pages(env, out, tags, site.page_size)
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
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(site), __version__, env.globals["assets"]]).encode())
    for path in template_files():
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


# -- assets ----------------------------------------------------------------------------------


def _assets(out: Output) -> dict[str, str]:
    """Copy the CSS and JS under names carrying their hash; returns {"css": rel, "js": rel}."""
    names = {}
    for kind, name in (("css", "site.css"), ("js", "viewer.js")):
        data = _static(name)
        digest = hashlib.sha256(data).hexdigest()[:10]
        rel = f"assets/{name.rsplit('.', 1)[0]}-{digest}.{kind}"
        out.write(rel, data)
        names[kind] = rel
    return names


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
            eager=EAGER_TILES if n == 1 else 0,
            og_work=chunk[0] if chunk else None,
        )


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
    _render(env, out, "tags.html", "tags/", tags=sorted(tags, key=lambda t: (-len(t.works), t.name)), og_work=None)


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
    return {n: s if s and counts[s] == 1 and n.isascii() else _hashed(s, n) for n, s in plain.items()}


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
