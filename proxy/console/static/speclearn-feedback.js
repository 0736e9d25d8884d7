/*! speclearn-feedback.js: thumbs buttons that send a user's judgment on one answer to a
 * speclearn proxy (POST /v1/feedback). No dependencies; works as a plain <script>.
 *
 *   <div data-speclearn-feedback data-inference-id="chatcmpl-..."></div>
 *   <script src="https://PROXY/console/static/speclearn-feedback.js"
 *           data-proxy="https://PROXY" data-key="PUBLISHABLE_FEEDBACK_KEY"></script>
 *
 * or from code: SpeclearnFeedback.render(element, {inferenceId, proxy, key, comment}).
 * The key must be a publishable one (SPECLEARN_FEEDBACK_KEYS): it can post feedback and nothing
 * else. The page's origin must be listed in SPECLEARN_CORS_ORIGINS. Apache-2.0, part of speclearn.
 */
(function (root) {
  "use strict";
  var script = document.currentScript;
  var defaults = {
    proxy: (script && script.getAttribute("data-proxy")) || "",
    key: (script && script.getAttribute("data-key")) || ""
  };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs) node.setAttribute(name, attrs[name]);
    if (text) node.textContent = text;
    return node;
  }

  var SVG = "http://www.w3.org/2000/svg";
  // a thumb drawn here (no emoji font needed, no icon library): up, or turned for down
  function thumb(down) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "1.2em");
    svg.setAttribute("height", "1.2em");
    svg.setAttribute("aria-hidden", "true");
    var g = document.createElementNS(SVG, "g");
    g.setAttribute("fill", "none");
    g.setAttribute("stroke", "currentColor");
    g.setAttribute("stroke-width", "1.8");
    g.setAttribute("stroke-linejoin", "round");
    if (down) g.setAttribute("transform", "rotate(180 12 12)");
    var cuff = document.createElementNS(SVG, "rect");
    cuff.setAttribute("x", "2"); cuff.setAttribute("y", "10"); cuff.setAttribute("width", "4"); cuff.setAttribute("height", "11");
    var hand = document.createElementNS(SVG, "path");
    hand.setAttribute("d", "M8 10 L12 3 C13.5 3 14.5 4 14 6 L13 10 L19 10 C20.5 10 21.5 11.3 21 12.7 L19 19.5 C18.7 20.4 17.9 21 17 21 L8 21 Z");
    g.appendChild(cuff); g.appendChild(hand); svg.appendChild(g);
    return svg;
  }

  function send(options, value) {
    var headers = { "Content-Type": "application/json" };
    if (options.key) headers.Authorization = "Bearer " + options.key;
    var body = { inference_id: options.inferenceId, value: value };
    if (options.comment) body.comment = options.comment;
    return fetch(options.proxy.replace(/\/+$/, "") + "/v1/feedback", {
      method: "POST", headers: headers, body: JSON.stringify(body), mode: "cors", credentials: "omit"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var message = (data && data.error && data.error.message) || ("HTTP " + response.status);
          throw new Error(message);
        }
        return data;
      });
    });
  }

  function render(target, options) {
    options = options || {};
    var o = {
      inferenceId: options.inferenceId || target.getAttribute("data-inference-id"),
      proxy: options.proxy || target.getAttribute("data-proxy") || defaults.proxy,
      key: options.key || target.getAttribute("data-key") || defaults.key,
      comment: options.comment
    };
    target.textContent = "";
    var box = el("span", { "class": "speclearn-feedback", role: "group", "aria-label": "Rate this answer" });
    var up = el("button", { type: "button", "class": "speclearn-up", "aria-label": "Good answer", title: "Good answer" });
    var down = el("button", { type: "button", "class": "speclearn-down", "aria-label": "Bad answer", title: "Bad answer" });
    up.appendChild(thumb(false));
    down.appendChild(thumb(true));
    var status = el("span", { "class": "speclearn-status", role: "status", "aria-live": "polite" });
    box.appendChild(up); box.appendChild(down); box.appendChild(status);
    target.appendChild(box);

    function click(value, button) {
      up.disabled = down.disabled = true;
      status.textContent = "Sending\u2026";
      send(o, value).then(function (data) {
        button.setAttribute("aria-pressed", "true");
        status.textContent = "Thanks!";
        target.setAttribute("data-feedback-id", data.feedback_id || "");
        target.dispatchEvent(new CustomEvent("speclearn:feedback", { detail: data, bubbles: true }));
      }, function (error) {
        up.disabled = down.disabled = false;
        status.textContent = "Not sent: " + error.message;
        target.setAttribute("data-feedback-error", error.message);
      });
    }
    up.addEventListener("click", function () { click("up", up); });
    down.addEventListener("click", function () { click("down", down); });
    return box;
  }

  function renderAll() {
    var nodes = document.querySelectorAll("[data-speclearn-feedback]");
    for (var i = 0; i < nodes.length; i++) {
      if (!nodes[i].firstChild) render(nodes[i]);
    }
  }

  root.SpeclearnFeedback = { render: render, renderAll: renderAll, send: send };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", renderAll);
  else renderAll();
})(window);
