// Draws the plotly figures of a chapter page with the one local assets/plotly.min.js.
// Each figure is a <div class="nb-plotly"> holding the JSON plotly's kernel renderer saved.
(function () {
  "use strict";

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
        window.Plotly.newPlot(target, fig.data || [], layout, config);
      } catch (err) {
        target.textContent = "This figure could not be drawn: " + err;
        target.className += " nb-plotly-error";
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawFigures);
  } else {
    drawFigures();
  }
})();
