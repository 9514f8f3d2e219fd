// The book's page behaviour, all offline: plotly figures drawn with the one local
// assets/plotly.min.js, the search box, copy buttons on code, folding of long outputs, the
// phone menu and the "on this page" outline. Text from the index or the page is only ever
// inserted with textContent, never as HTML.
(function () {
  "use strict";

  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;

  // ---- plotly figures: each is a <div class="nb-plotly"> holding the JSON the kernel saved ----

  function darkLayout(layout) {
    var out = Object.assign({}, layout, {
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#161b22",
      font: Object.assign({}, layout.font, { color: "#d1d7e0" }),
    });
    if (layout.legend) {
      out.legend = Object.assign({}, layout.legend, { bgcolor: "rgba(0,0,0,0)" });
    }
    var axes = Object.keys(layout).filter(function (k) {
      return /^[xy]axis\d*$/.test(k);
    });
    ["xaxis", "yaxis"].forEach(function (k) {
      if (axes.indexOf(k) < 0) axes.push(k);
    });
    axes.forEach(function (k) {
      out[k] = Object.assign({}, layout[k], {
        gridcolor: "#30363d",
        linecolor: "#59636e",
        zerolinecolor: "#59636e",
      });
    });
    return out;
  }

  function drawFigures() {
    if (!window.Plotly) {
      return;
    }
    document.querySelectorAll(".nb-plotly").forEach(function (box) {
      var target = box.querySelector(".nb-plotly-figure");
      var source = box.querySelector('script[type="application/vnd.plotly.v1+json"]');
      if (!target || !source || target.dataset.drawn) {
        return;
      }
      target.dataset.drawn = "1";
      try {
        var fig = JSON.parse(source.textContent);
        var layout = fig.layout || {};
        var config = Object.assign({ responsive: true, displaylogo: false }, fig.config || {});
        // A figure without a height of its own gets plotly's usual 450 px.
        target.style.height = (layout.height || 450) + "px";
        // A fixed width would overflow a phone's screen: it becomes the largest width.
        if (layout.width) {
          target.style.maxWidth = layout.width + "px";
          delete layout.width;
        }
        window.Plotly.newPlot(target, fig.data || [], dark ? darkLayout(layout) : layout, config);
      } catch (err) {
        target.textContent = "This figure could not be drawn: " + err;
        target.className += " nb-plotly-error";
      }
    });
  }

  // ---- copy buttons on code cells ----

  function legacyCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } finally {
      document.body.removeChild(area);
    }
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && navigator.clipboard.writeText) {
      return navigator.clipboard.writeText(text).catch(function () {
        return legacyCopy(text);
      });
    }
    return legacyCopy(text);
  }

  function addCopyButtons() {
    document.querySelectorAll(".jp-CodeCell .jp-InputArea-editor").forEach(function (editor) {
      var pre = editor.querySelector("pre");
      if (!pre || editor.querySelector(".copy-button")) {
        return;
      }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this code");
      button.addEventListener("click", function () {
        copyText(pre.textContent.replace(/\n$/, "")).then(
          function () {
            flash(button, "Copied");
          },
          function () {
            flash(button, "Press Ctrl+C");
          }
        );
      });
      editor.appendChild(button);
    });
  }

  function flash(button, text) {
    button.textContent = text;
    button.dataset.state = text === "Copied" ? "copied" : "failed";
    window.setTimeout(function () {
      button.textContent = "Copy";
      delete button.dataset.state;
    }, 1500);
  }

  // ---- long outputs fold to a few hundred pixels, with a button to unfold ----

  var FOLD_PX = 420;

  function foldLongOutputs() {
    document.querySelectorAll(".jp-OutputArea-output").forEach(function (out) {
      if (
        out.classList.contains("nb-plotly") ||
        out.classList.contains("jupyter-widgets") ||
        out.closest(".nb-params-cell") ||
        out.scrollHeight < FOLD_PX * 1.6
      ) {
        return;
      }
      out.classList.add("nb-foldable", "nb-folded");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "fold-button";
      button.setAttribute("aria-expanded", "false");
      button.textContent = "Show all output";
      button.addEventListener("click", function () {
        var folded = out.classList.toggle("nb-folded");
        button.setAttribute("aria-expanded", folded ? "false" : "true");
        button.textContent = folded ? "Show all output" : "Fold this output";
      });
      out.parentNode.insertBefore(button, out.nextSibling);
    });
  }

  // ---- phone menu and the outline of the page ----

  function setUpMenu() {
    var toggle = document.querySelector(".menu-toggle");
    var sidebar = document.getElementById("sidebar");
    if (!toggle || !sidebar) {
      return;
    }
    toggle.addEventListener("click", function () {
      var open = sidebar.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) {
        var input = document.getElementById("book-search");
        if (input) input.focus();
      }
    });
  }

  function setUpOutline() {
    var outline = document.querySelector(".page-toc");
    if (outline && window.matchMedia("(min-width: 92rem)").matches) {
      outline.open = true;
    }
  }

  // ---- search: MiniSearch over assets/search-index.js, both loaded on first use ----

  var engine = null;
  var loading = null;

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () {
        reject(new Error("could not load " + src));
      };
      document.head.appendChild(s);
    });
  }

  function loadSearch() {
    if (!loading) {
      loading = Promise.all([
        loadScript("assets/minisearch/index.js"),
        loadScript("assets/search-index.js"),
      ]).then(function () {
        engine = new window.MiniSearch({
          fields: ["section", "chapter", "text"],
          storeFields: ["href", "chapter", "section", "text"],
          searchOptions: {
            boost: { section: 3, chapter: 2 },
            prefix: true,
            fuzzy: 0.15,
            combineWith: "AND",
          },
        });
        engine.addAll(window.NANOBOOK_SEARCH_DOCS || []);
      });
    }
    return loading;
  }

  function snippet(text, terms) {
    var lower = text.toLowerCase();
    var at = -1;
    for (var i = 0; i < terms.length && at < 0; i++) {
      at = lower.indexOf(terms[i].toLowerCase());
    }
    var start = Math.max(0, at < 0 ? 0 : at - 60);
    var piece = text.slice(start, start + 180);
    return (start > 0 ? "…" : "") + piece + (start + 180 < text.length ? "…" : "");
  }

  // Appends text to el with each occurrence of a term wrapped in <mark> (as DOM nodes).
  function appendMarked(el, text, terms) {
    var words = terms
      .filter(function (t) {
        return t.length > 1;
      })
      .map(function (t) {
        return t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      });
    if (!words.length) {
      el.appendChild(document.createTextNode(text));
      return;
    }
    var re = new RegExp("(" + words.join("|") + ")", "ig");
    text.split(re).forEach(function (part, i) {
      if (i % 2) {
        var mark = document.createElement("mark");
        mark.textContent = part;
        el.appendChild(mark);
      } else if (part) {
        el.appendChild(document.createTextNode(part));
      }
    });
  }

  function showResults(list, query) {
    list.textContent = "";
    if (!query.trim()) {
      list.hidden = true;
      return;
    }
    var hits = engine.search(query).slice(0, 12);
    if (!hits.length) {
      var none = document.createElement("li");
      none.className = "search-none";
      none.textContent = "Nothing found for “" + query + "”.";
      list.appendChild(none);
    }
    hits.forEach(function (hit) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = hit.href;
      a.className = "search-hit";
      var where = document.createElement("span");
      where.className = "search-where";
      where.textContent = hit.chapter + (hit.section ? " › " + hit.section : "");
      var text = document.createElement("span");
      text.className = "search-snippet";
      appendMarked(text, snippet(hit.text || "", hit.terms), hit.terms);
      a.appendChild(where);
      a.appendChild(text);
      li.appendChild(a);
      list.appendChild(li);
    });
    list.hidden = false;
  }

  function setUpSearch() {
    var input = document.getElementById("book-search");
    var list = document.getElementById("book-search-results");
    if (!input || !list) {
      return;
    }
    var run = function () {
      loadSearch().then(
        function () {
          showResults(list, input.value);
        },
        function (err) {
          list.textContent = "";
          var li = document.createElement("li");
          li.className = "search-none";
          li.textContent = "Search is unavailable: " + err.message;
          list.appendChild(li);
          list.hidden = false;
        }
      );
    };
    input.addEventListener("focus", function () {
      loadSearch().catch(function () {});
    });
    input.addEventListener("input", run);
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") {
        var first = list.querySelector("a.search-hit");
        if (first) window.location.href = first.href;
      } else if (e.key === "Escape") {
        input.value = "";
        list.hidden = true;
      }
    });
  }

  function start() {
    drawFigures();
    addCopyButtons();
    foldLongOutputs();
    setUpMenu();
    setUpOutline();
    setUpSearch();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
