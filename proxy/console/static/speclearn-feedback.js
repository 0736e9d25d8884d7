/*! speclearn-feedback.js: thumbs buttons that send a user's judgment on one answer to a
 * speclearn proxy (POST /v1/feedback). No dependencies; works as a plain <script>.
 *
 *   <div data-speclearn-feedback data-inference-id="chatcmpl-..." data-user="optional-user-id"></div>
 *   <script src="https://PROXY/console/static/speclearn-feedback.js"
 *           data-proxy="https://PROXY" data-key="PUBLISHABLE_FEEDBACK_KEY"></script>
 *
 * or from code: SpeclearnFeedback.render(element, {inferenceId, proxy, key, user, comment}).
 * Clicking the other thumb changes the vote (PUT /v1/feedback/ID), clicking the same thumb again
 * takes it back (DELETE); after a thumbs-down an optional "What should be different?" box sends a
 * comment with the vote. The widget keeps the feedback id the proxy gave back: with a publishable
 * key, only that id lets this page change the vote.
 * The key must be a publishable one (SPECLEARN_FEEDBACK_KEYS): it can post feedback (and change
 * its own) and nothing else. The page's origin must be listed in SPECLEARN_CORS_ORIGINS.
 * Apache-2.0, part of speclearn.
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

  function call(options, method, path, body) {
    var headers = {};
    if (body) headers["Content-Type"] = "application/json";
    if (options.key) headers.Authorization = "Bearer " + options.key;
    return fetch(options.proxy.replace(/\/+$/, "") + "/v1/feedback" + path, {
      method: method, headers: headers, body: body ? JSON.stringify(body) : undefined, mode: "cors", credentials: "omit"
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

  // a new vote: POST /v1/feedback
  function send(options, value) {
    var body = { inference_id: options.inferenceId, value: value };
    if (options.comment) body.comment = options.comment;
    if (options.user) body.user = options.user;
    return call(options, "POST", "", body);
  }

  // a changed vote or comment, by the id the proxy gave back: PUT /v1/feedback/ID
  function change(options, feedbackId, fields) {
    return call(options, "PUT", "/" + encodeURIComponent(feedbackId), fields);
  }

  // a vote taken back: DELETE /v1/feedback/ID
  function retract(options, feedbackId) {
    return call(options, "DELETE", "/" + encodeURIComponent(feedbackId));
  }

  function render(target, options) {
    options = options || {};
    var o = {
      inferenceId: options.inferenceId || target.getAttribute("data-inference-id"),
      proxy: options.proxy || target.getAttribute("data-proxy") || defaults.proxy,
      key: options.key || target.getAttribute("data-key") || defaults.key,
      user: options.user || target.getAttribute("data-user") || "",
      comment: options.comment
    };
    target.textContent = "";
    var box = el("span", { "class": "speclearn-feedback", role: "group", "aria-label": "Rate this answer" });
    var up = el("button", { type: "button", "class": "speclearn-up", "aria-label": "Good answer", title: "Good answer", "aria-pressed": "false" });
    var down = el("button", { type: "button", "class": "speclearn-down", "aria-label": "Bad answer", title: "Bad answer", "aria-pressed": "false" });
    up.appendChild(thumb(false));
    down.appendChild(thumb(true));
    var status = el("span", { "class": "speclearn-status", role: "status", "aria-live": "polite" });
    box.appendChild(up); box.appendChild(down); box.appendChild(status);
    target.appendChild(box);

    // after a thumbs-down: what should be different? (optional; sent as a change of the vote)
    var boxId = "speclearn-comment-" + Math.random().toString(36).slice(2);
    var form = el("form", { "class": "speclearn-comment" });
    var label = el("label", { "for": boxId }, "What should be different?");
    var text = el("textarea", { id: boxId, name: "comment", rows: "3", maxlength: "8000" });
    var submit = el("button", { type: "submit", "class": "speclearn-send" }, "Send");
    form.appendChild(label); form.appendChild(text); form.appendChild(submit);
    form.hidden = true;
    target.appendChild(form);

    var vote = null;  // {id, value} once the proxy has stored one
    var busy = false;

    function show(newVote, message, detail) {
      vote = newVote;
      up.setAttribute("aria-pressed", String(!!vote && vote.value === "up"));
      down.setAttribute("aria-pressed", String(!!vote && vote.value === "down"));
      if (vote) target.setAttribute("data-feedback-id", vote.id);
      else target.removeAttribute("data-feedback-id");
      target.removeAttribute("data-feedback-error");
      form.hidden = !(vote && vote.value === "down");
      status.textContent = message;
      target.dispatchEvent(new CustomEvent("speclearn:feedback", { detail: detail, bubbles: true }));
    }

    function run(request, done) {
      busy = up.disabled = down.disabled = submit.disabled = true;
      status.textContent = "Sending\u2026";
      request.then(function (data) {
        busy = up.disabled = down.disabled = submit.disabled = false;
        done(data);
      }, function (error) {
        busy = up.disabled = down.disabled = submit.disabled = false;
        status.textContent = "Not sent: " + error.message;
        target.setAttribute("data-feedback-error", error.message);
      });
    }

    function click(value) {
      if (busy) return;
      if (!vote) {
        run(send(o, value), function (data) {
          show({ id: data.feedback_id, value: value }, "Thanks!", { feedback_id: data.feedback_id, status: data.status, value: value });
        });
      } else if (vote.value === value) {
        var id = vote.id;
        run(retract(o, id), function (data) {
          text.value = "";
          show(null, "Vote removed.", { feedback_id: id, status: data.status, value: null });
        });
      } else {
        var changed = { id: vote.id, value: value };
        run(change(o, vote.id, { value: value }), function (data) {
          show(changed, "Thanks!", { feedback_id: changed.id, status: data.status, value: value });
        });
      }
    }
    up.addEventListener("click", function () { click("up"); });
    down.addEventListener("click", function () { click("down"); });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var comment = text.value.trim();
      if (busy || !vote || !comment) return;
      var current = vote;
      run(change(o, current.id, { comment: comment }), function (data) {
        form.hidden = true;
        status.textContent = "Thanks, noted.";
        target.dispatchEvent(new CustomEvent("speclearn:feedback", {
          detail: { feedback_id: current.id, status: data.status, value: current.value, comment: comment }, bubbles: true }));
      });
    });
    return box;
  }

  function renderAll() {
    var nodes = document.querySelectorAll("[data-speclearn-feedback]");
    for (var i = 0; i < nodes.length; i++) {
      if (!nodes[i].firstChild) render(nodes[i]);
    }
  }

  root.SpeclearnFeedback = { render: render, renderAll: renderAll, send: send, change: change, retract: retract };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", renderAll);
  else renderAll();
})(window);
