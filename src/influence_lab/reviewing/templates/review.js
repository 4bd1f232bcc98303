// Keyboard grading for a task page: j / k (or the arrows) move between candidates, 1 2 3 grade the
// focused one and move on, n opens its note, Enter saves the task. Nothing here is needed to grade by
// mouse; the form posts without it.
(function () {
  const cards = Array.from(document.querySelectorAll(".candidate"));
  const form = document.getElementById("task-form");
  const count = document.getElementById("graded-count");
  if (!cards.length || !form) return;
  let at = 0;
  function show() {
    let graded = 0;
    cards.forEach((c, i) => {
      const done = c.querySelector("input[type=radio]:checked") !== null;
      c.classList.toggle("graded", done);
      c.classList.toggle("focused", i === at);
      graded += done ? 1 : 0;
    });
    count.textContent = graded + " of " + cards.length + " graded";
  }
  function focus(i) {
    at = Math.max(0, Math.min(cards.length - 1, i));
    cards[at].focus();
    show();
  }
  cards.forEach((c, i) => c.addEventListener("focusin", () => { at = i; show(); }));
  form.addEventListener("change", show);
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "TEXTAREA") {
      if (e.key === "Escape") { e.target.blur(); cards[at].focus(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const radios = cards[at].querySelectorAll("input[type=radio]");
    if (e.key === "j" || e.key === "ArrowDown") { focus(at + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { focus(at - 1); e.preventDefault(); }
    else if (["1", "2", "3"].includes(e.key) && radios[Number(e.key) - 1]) {
      radios[Number(e.key) - 1].checked = true;
      focus(at + 1);
      e.preventDefault();
    } else if (e.key === "n") { cards[at].querySelector("textarea").focus(); e.preventDefault(); }
    else if (e.key === "Enter") { form.requestSubmit(); e.preventDefault(); }
  });
  focus(cards.findIndex((c) => c.querySelector("input[type=radio]:checked") === null) >= 0
    ? cards.findIndex((c) => c.querySelector("input[type=radio]:checked") === null) : 0);
})();
