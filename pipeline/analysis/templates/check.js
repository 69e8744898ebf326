// Runs when the page has loaded: counts what rendered so a headless browser can verify the page.
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure[data-figure] img'));
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  var b = document.body;
  var summary = document.getElementById('summary');
  b.setAttribute('data-images', String(imgs.length));
  b.setAttribute('data-broken-images', String(broken));
  b.setAttribute('data-tables-rendered', String(document.querySelectorAll('section[data-table] table.ours').length));
  if (summary) {
    var box = summary.getBoundingClientRect();
    b.setAttribute('data-summary-top', String(Math.round(box.top + window.scrollY)));
    b.setAttribute('data-summary-bottom', String(Math.round(box.bottom + window.scrollY)));
  }
  b.setAttribute('data-viewport-width', String(window.innerWidth));
  b.setAttribute('data-page-width', String(document.documentElement.scrollWidth));
  b.setAttribute('data-page-height', String(document.documentElement.scrollHeight));
  b.setAttribute('data-checked', 'yes');
});
// Printing opens every collapsed block, so a printout holds the whole report.
window.addEventListener('beforeprint', function () {
  document.querySelectorAll('details').forEach(function (d) { d.setAttribute('open', ''); });
});
