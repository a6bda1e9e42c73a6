/* The admin UI's only script: live progress of editions, and confirmation prompts.
 *
 * Every element with data-progress-url polls that JSON endpoint once a second and updates
 * itself (bar, percentage, counts, status, rate, ETA) until the edition reaches a final
 * status, so an operator watches a send without reloading. Elements with data-when="a b"
 * are shown only while the edition's status is one of those (the pause/resume buttons).
 * The rate is measured from the last polls; until there are enough, the server's average
 * since the start is shown. Pages work without this script; they just do not move.
 */
(function () {
  'use strict';

  var arabicDigits = document.documentElement.getAttribute('data-digits') === 'arab';
  var numbers = new Intl.NumberFormat(arabicDigits ? 'ar-EG' : 'en-US');
  var POLL_MS = 1000;
  var WINDOW_MS = 10000;

  function num(value) {
    return numbers.format(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) {
      return '—';
    }
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) {
      return 'أقل من دقيقة';
    }
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) {
      return num(minutes) + ' دقيقة';
    }
    var hours = Math.floor(minutes / 60);
    return num(hours) + ' ساعة و' + num(minutes % 60) + ' دقيقة';
  }

  function setText(root, selector, text) {
    var node = root.querySelector(selector);
    if (node && node.textContent !== text) {
      node.textContent = text;
    }
  }

  function showWhen(scope, status, counts) {
    scope.querySelectorAll('[data-when]').forEach(function (node) {
      var statuses = node.getAttribute('data-when').split(' ');
      var needs = node.getAttribute('data-needs');
      var visible = statuses.indexOf(status) !== -1 && (!needs || (counts[needs] || 0) > 0);
      node.hidden = !visible;
    });
  }

  function update(box, data, samples) {
    var now = Date.now();
    samples.push([now, data.done]);
    while (samples.length > 2 && now - samples[0][0] > WINDOW_MS) {
      samples.shift();
    }
    var rate = data.rate;
    var span = (samples[samples.length - 1][0] - samples[0][0]) / 1000;
    if (span >= 2 && data.status === 'sending') {
      rate = (samples[samples.length - 1][1] - samples[0][1]) / span;
    }
    var remaining = data.total - data.done;
    var eta = data.status === 'sending' && rate > 0 ? remaining / rate : null;

    box.setAttribute('data-status', data.status);
    box.setAttribute('data-percent', String(data.percent));
    var bar = box.querySelector('progress');
    if (bar) {
      bar.value = data.percent;
      bar.textContent = num(data.percent) + '٪';
    }
    setText(box, '[data-field="percent"]', num(data.percent) + '٪');
    setText(box, '[data-field="done"]', num(data.done));
    setText(box, '[data-field="total"]', num(data.total));
    setText(box, '[data-field="rate"]', num(Math.round(rate * 10) / 10));
    setText(box, '[data-field="eta"]', data.final ? '—' : duration(eta));
    setText(box, '[data-field="reason"]', data.reason || '');
    var badge = box.querySelector('[data-field="status"]');
    if (badge) {
      badge.textContent = data.status_label;
      badge.className = 'badge status-' + data.status;
    }
    box.querySelectorAll('[data-count]').forEach(function (node) {
      var text = num(data.counts[node.getAttribute('data-count')] || 0);
      if (node.textContent !== text) {
        node.textContent = text;
      }
    });
    var scope = box.closest('[data-controls-scope]') || box;
    showWhen(scope, data.status, data.counts);
  }

  function watch(box) {
    var url = box.getAttribute('data-progress-url');
    var samples = [];
    function poll() {
      fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error('HTTP ' + response.status);
          }
          return response.json();
        })
        .then(function (data) {
          update(box, data, samples);
          if (!data.final) {
            window.setTimeout(poll, POLL_MS);
          }
        })
        .catch(function () {
          // A restart of the web app or a dropped connection: try again a little later.
          box.setAttribute('data-stale', 'true');
          window.setTimeout(poll, POLL_MS * 5);
        });
    }
    poll();
  }

  function init() {
    document.querySelectorAll('[data-progress-url]').forEach(watch);
    document.addEventListener('submit', function (event) {
      var question = event.target.getAttribute('data-confirm');
      if (question && !window.confirm(question)) {
        event.preventDefault();
      }
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
