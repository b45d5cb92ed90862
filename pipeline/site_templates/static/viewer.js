/* aiimg viewer: click an image to see it large; arrows / Esc / swipe. Without JS every link
   still works (it opens the work page or the full-size PNG). Also: copy buttons, and on the
   search page only, the search module (search.js, then Pagefind's index: nowhere else). */
(function () {
  "use strict";
  var doc = document;
  doc.documentElement.classList.add("js");

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var area = doc.createElement("textarea");
    area.value = text;
    doc.body.appendChild(area);
    area.select();
    try { doc.execCommand("copy"); } finally { area.remove(); }
    return Promise.resolve();
  }

  // data-copy: a prompt; data-infotext: a variation's whole generation data. Either names the
  // element whose text is copied; only the button's visible label (its first child) changes.
  doc.addEventListener("click", function (e) {
    var button = e.target.closest("[data-copy], [data-infotext]");
    if (!button) return;
    var id = button.getAttribute("data-copy") || button.getAttribute("data-infotext");
    var source = doc.getElementById(id);
    var shown = button.firstChild;
    var label = shown.textContent;
    copyText(source.textContent).then(function () {
      shown.textContent = button.getAttribute("data-done");
      setTimeout(function () { shown.textContent = label; }, 1400);
    });
  });

  function startSearch() {
    var form = doc.querySelector("form[data-module]");
    if (!form) return;
    import(new URL(form.getAttribute("data-module"), doc.baseURI).href).then(function (module) {
      module.start(form);
    }).catch(function () {  // a page opened as a file cannot load modules: say so
      doc.querySelector(".search-status").textContent = form.getAttribute("data-failed");
    });
  }

  function start() {
    var links = Array.prototype.slice.call(doc.querySelectorAll("a[data-full]"));
    var box = doc.querySelector(".viewer");
    if (!links.length || !box) return;
    var img = doc.createElement("img");   // made here: no empty <img> in the page without JS
    img.decoding = "async";
    box.querySelector(".viewer-stage").appendChild(img);
    var caption = box.querySelector(".viewer-caption span");
    var page = box.querySelector(".viewer-caption a");
    var current = -1, opener = null, touchX = null;

    function show(i) {
      current = (i + links.length) % links.length;
      var a = links[current];
      img.removeAttribute("srcset");
      img.width = +a.getAttribute("data-w");
      img.height = +a.getAttribute("data-h");
      img.style.background = a.getAttribute("data-color");
      img.sizes = "94vw";
      img.srcset = a.getAttribute("data-srcset");
      img.src = a.getAttribute("data-full");
      img.alt = a.getAttribute("data-caption");
      caption.textContent = a.getAttribute("data-caption");
      var target = a.getAttribute("data-page");
      page.hidden = !target;
      if (target) page.href = target;
      box.setAttribute("data-index", String(current));
    }
    function open(i, from) {
      opener = from;
      show(i);
      box.hidden = false;
      doc.body.style.overflow = "hidden";
      box.querySelector(".viewer-close").focus();
    }
    function close() {
      box.hidden = true;
      doc.body.style.overflow = "";
      if (opener) opener.focus();
    }

    links.forEach(function (a, i) {
      a.addEventListener("click", function (e) {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        open(i, a);
      });
    });
    box.querySelector(".viewer-prev").addEventListener("click", function () { show(current - 1); });
    box.querySelector(".viewer-next").addEventListener("click", function () { show(current + 1); });
    box.querySelector(".viewer-close").addEventListener("click", close);
    box.addEventListener("click", function (e) { if (e.target === box || e.target.tagName === "FIGURE") close(); });
    doc.addEventListener("keydown", function (e) {
      if (box.hidden) return;
      if (e.key === "Escape") close();
      else if (e.key === "ArrowRight") show(current + 1);
      else if (e.key === "ArrowLeft") show(current - 1);
      else return;
      e.preventDefault();
    });
    box.addEventListener("touchstart", function (e) { touchX = e.changedTouches[0].clientX; }, { passive: true });
    box.addEventListener("touchend", function (e) {
      if (touchX === null) return;
      var dx = e.changedTouches[0].clientX - touchX;
      touchX = null;
      if (Math.abs(dx) > 40) show(current + (dx < 0 ? 1 : -1));
    });
  }

  function ready() {
    startSearch();
    start();
  }
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
