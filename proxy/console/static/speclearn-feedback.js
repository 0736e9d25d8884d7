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
    var up = el("button", { type: "button", "class": "speclearn-up", "aria-label": "Good answer", title: "Good answer" }, "\uD83D\uDC4D");
    var down = el("button", { type: "button", "class": "speclearn-down", "aria-label": "Bad answer", title: "Bad answer" }, "\uD83D\uDC4E");
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
