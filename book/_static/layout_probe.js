// The browser check's look at the layout (tests/browser/check_pages.py). Only when the page is
// opened with #layout-probe in its URL: after everything has loaded, it marks each code block
// or displayed formula that is wider than its box (data-overflow: by how many pixels) and each
// figure drawn smaller than its pixels (data-shrink: natural width / drawn width), then records
// on <body> that it ran. A reader's page never has the fragment, and nothing happens.
function measureLayout() {
  let blocks = 0;
  let figures = 0;
  // folded code and outputs (cells tagged hide-input, hide-output) are left out: the reader
  // meets them only on asking, and plotting code is folded because it is not the lesson
  const folded = ".tag_hide-input .cell_input pre, .tag_hide-output .cell_output pre, .tag_hide-cell pre";
  for (const pre of document.querySelectorAll("article pre")) {
    if (pre.clientWidth === 0 || pre.matches(folded)) continue;
    blocks += 1;
    const over = pre.scrollWidth - pre.clientWidth;
    if (over > 1) pre.dataset.overflow = String(over);
  }
  // a displayed formula wider than the column runs off its right edge (break it with aligned)
  let formulas = 0;
  for (const math of document.querySelectorAll('article mjx-container[display="true"]')) {
    const drawn = math.querySelector("svg");
    if (!drawn || math.clientWidth === 0) continue;
    formulas += 1;
    const over = Math.round(drawn.getBoundingClientRect().width - math.clientWidth);
    if (over > 1) math.dataset.overflow = String(over);
  }
  for (const img of document.querySelectorAll("article img")) {
    if (img.clientWidth === 0 || img.naturalWidth === 0 || img.closest(".tag_hide-output")) continue;
    figures += 1;
    img.dataset.shrink = (img.naturalWidth / img.clientWidth).toFixed(2);
  }
  document.body.dataset.layoutProbe = `${blocks} code blocks, ${formulas} formulas, ${figures} figures`;
}

window.addEventListener("load", () => {
  if (!location.hash.includes("layout-probe")) return;
  // MathJax typesets after the page has loaded: measure once it has finished
  const typeset = window.MathJax?.startup?.promise ?? Promise.resolve();
  typeset.then(measureLayout);
});
