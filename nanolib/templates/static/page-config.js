// Settings read by the libraries a chapter page loads; this file loads before them.
(function () {
  "use strict";

  // The widget manager still speaks MathJax 2: it calls MathJax.Hub.Queue(["Typeset", hub, el]).
  // Answer that with MathJax 3's typesetPromise (a no-op until MathJax has started; its first
  // pass typesets the whole page anyway).
  var hub = {
    Queue: function (job) {
      var mj = window.MathJax;
      if (mj && mj.typesetPromise) {
        var el = Array.isArray(job) ? job[2] : undefined;
        mj.typesetPromise(el ? [el] : undefined).catch(function () {});
      }
    },
  };

  // MathJax 3: $…$ and \(…\) inline, $$…$$ and \[…\] displayed. Its fonts load from
  // assets/mathjax/output/chtml/fonts/ next to tex-chtml-full.js.
  window.MathJax = {
    Hub: hub,
    tex: {
      inlineMath: [["$", "$"], ["\\(", "\\)"]],
      displayMath: [["$$", "$$"], ["\\[", "\\]"]],
      processEscapes: true,
      processEnvironments: true,
      tags: "ams",
    },
    options: {
      ignoreHtmlClass: "tex2jax_ignore|sidebar|run-card|banner",
      processHtmlClass: "tex2jax_process",
      menuOptions: { settings: { assistiveMml: false, explorer: false } },
    },
    startup: {
      ready: function () {
        window.MathJax.startup.defaultReady();
        window.MathJax.Hub = hub;
      },
    },
  };

  // plotly.js: leave MathJax's configuration alone.
  window.PlotlyConfig = { MathJaxConfig: "local" };
})();
