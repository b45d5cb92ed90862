/* aiimg search page: queries the static Pagefind index in output/pagefind/ as you type.
   Loaded by viewer.js on the search page only. Everything a result shows (title, prompt,
   thumbnail) comes from the index as text and goes into the page as text or as a URL checked
   to stay on this site: never as markup. Keys: Enter searches, Down arrow moves from the box
   to the results and between them, Up arrow back, Escape returns to the box. */

const WAIT_MS = 120; // typing pause before a query runs

export function start(form) {
  const doc = document;
  // results whose data is fetched at a time ("Show more" for the next ones): one fragment each
  const BATCH = +form.getAttribute("data-batch") || 40;
  const input = form.querySelector("input[name=q]");
  const status = doc.querySelector(".search-status");
  const list = doc.getElementById("search-results");
  const root = new URL(form.getAttribute("data-root"), doc.baseURI);
  const text = (name, q, n) =>
    form.getAttribute("data-" + name).replace("{q}", q).replace("{n}", String(n));
  let pagefind = null;
  let asked = 0; // the newest query: an older one that answers late is dropped
  let timer = 0;
  let more = null;

  function load() {
    if (!pagefind) {
      pagefind = import(new URL(form.getAttribute("data-bundle"), doc.baseURI).href).then(async (pf) => {
        // result URLs relative to the site's root ("/works/<id>/"), whatever sub-path serves it:
        // they are resolved against data-root below, as every link of the site is
        await pf.options({ baseUrl: "/" });
        return pf;
      });
    }
    return pagefind;
  }

  // a URL from the index, resolved against `base`, only if it stays under the site's root
  function local(url, base) {
    try {
      const resolved = new URL(url, base);
      return resolved.href.startsWith(root.href) ? resolved : null;
    } catch (err) {
      return null;
    }
  }

  function card(data) {
    const page = local(String(data.url || "").replace(/^\/+/, ""), root);
    if (!page) return null;
    const meta = data.meta || {};
    const li = doc.createElement("li");
    const a = doc.createElement("a");
    a.href = page.href;
    const image = meta.image && local(meta.image, page);
    if (image) {
      const img = doc.createElement("img");
      img.alt = ""; // the title beside it names the link
      img.loading = "lazy";
      img.decoding = "async";
      if (+meta.image_width && +meta.image_height) {
        img.width = +meta.image_width;
        img.height = +meta.image_height;
      }
      const srcset = String(meta.image_srcset || "")
        .split(",")
        .map((part) => part.trim().split(/\s+/))
        .map(([url, w]) => [url && local(url, page), w])
        .filter(([url, w]) => url && /^\d+w$/.test(w || ""));
      if (srcset.length) {
        img.sizes = img.width ? img.width + "px" : "120px";
        img.srcset = srcset.map(([url, w]) => url.href + " " + w).join(", ");
      }
      img.src = image.href;
      a.appendChild(img);
    }
    const title = doc.createElement("span");
    title.className = "result-title";
    title.textContent = meta.title || page.pathname;
    const prompt = doc.createElement("span");
    prompt.className = "result-prompt";
    prompt.textContent = meta.prompt || "";
    a.append(title, prompt);
    li.appendChild(a);
    return li;
  }

  // the data of results[from..from+BATCH], then into the list (and the status, when given),
  // all at once: whoever sees the status sees its results
  async function show(results, from, mine, said) {
    const batch = await Promise.all(results.slice(from, from + BATCH).map((r) => r.data()));
    if (mine !== asked) return;
    if (from === 0) list.replaceChildren();
    for (const data of batch) {
      const li = card(data);
      if (li) list.appendChild(li);
    }
    if (more) more.remove();
    more = null;
    if (from + BATCH < results.length) {
      more = doc.createElement("button");
      more.type = "button";
      more.className = "more-results";
      more.textContent = form.getAttribute("data-more");
      more.addEventListener("click", () => {
        const next = list.children.length;
        show(results, from + BATCH, mine).then(() => {
          const first = list.children[next];
          if (first) first.querySelector("a").focus();
        });
      });
      list.after(more);
    }
    if (said) status.textContent = said;
  }

  async function run(query) {
    const mine = ++asked;
    const q = query.trim();
    const url = new URL(location.href);
    if (q) url.searchParams.set("q", q);
    else url.searchParams.delete("q");
    history.replaceState(null, "", url.href);
    if (!q) {
      list.replaceChildren();
      status.textContent = "";
      if (more) more.remove();
      return;
    }
    let found;
    try {
      found = await (await load()).search(q);
    } catch (err) {
      if (mine === asked) status.textContent = form.getAttribute("data-failed");
      return;
    }
    if (mine !== asked) return;
    const results = (found && found.results) || [];
    const n = results.length;
    await show(results, 0, mine, text(n === 0 ? "none" : n === 1 ? "one" : "many", q, n));
  }

  function links() {
    return Array.from(list.querySelectorAll("a"));
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(timer);
    run(input.value);
  });
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => run(input.value), WAIT_MS);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" && links().length) {
      e.preventDefault();
      links()[0].focus();
    }
  });
  list.addEventListener("keydown", (e) => {
    const all = links();
    const i = all.indexOf(doc.activeElement);
    if (i < 0) return;
    if (e.key === "ArrowDown" && i + 1 < all.length) all[i + 1].focus();
    else if (e.key === "ArrowUp") (i > 0 ? all[i - 1] : input).focus();
    else if (e.key === "Escape") input.focus();
    else return;
    e.preventDefault();
  });

  const q = new URLSearchParams(location.search).get("q") || "";
  input.value = q;
  if (q) run(q);
  else {
    // fetch the index while the visitor types; a missing one is said at once
    load().catch(() => {
      status.textContent = form.getAttribute("data-failed");
    });
  }
}
