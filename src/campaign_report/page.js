(function () {
  "use strict";
  function value(cell) {
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b));
  }
  function showPage(table, page) {
    var size = parseInt(table.getAttribute("data-page-rows") || "0", 10);
    if (!size) { return; }
    var rows = table.tBodies[0].rows;
    var pages = Math.max(1, Math.ceil(rows.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    for (var i = 0; i < rows.length; i++) {
      rows[i].hidden = i < page * size || i >= (page + 1) * size;
    }
    table.setAttribute("data-page", String(page));
    var pager = document.querySelector('.pager[data-for="' + table.id + '"]');
    if (pager) {
      pager.hidden = false;
      pager.querySelector(".page-of").textContent = "page " + (page + 1) + " of " + pages;
      pager.querySelector('[data-step="-1"]').disabled = page === 0;
      pager.querySelector('[data-step="1"]').disabled = page === pages - 1;
    }
  }
  function sortBy(table, th) {
    var col = th.cellIndex;
    var descending = th.getAttribute("aria-sort") !== "descending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var c = compare(value(a.cells[col]), value(b.cells[col]));
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    showPage(table, 0);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortBy(table, th); }); }
    });
    showPage(table, 0);
  });
  Array.prototype.forEach.call(document.querySelectorAll(".pager"), function (pager) {
    var table = document.getElementById(pager.getAttribute("data-for"));
    Array.prototype.forEach.call(pager.querySelectorAll("button"), function (button) {
      button.addEventListener("click", function () {
        var page = parseInt(table.getAttribute("data-page") || "0", 10);
        showPage(table, page + parseInt(button.getAttribute("data-step"), 10));
      });
    });
  });
}());
