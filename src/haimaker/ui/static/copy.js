// haimaker admin UI: the Copy button of a value shown once (the new key). A file, not inline: the CSP allows only
// our own scripts. Without JS (or clipboard access) the value stays in a readonly input to select and copy by hand.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copyTarget);
  const status = document.getElementById("copy-status");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    button.textContent = "Copied";
    if (status) status.textContent = "Copied to the clipboard.";
  } catch {
    if (status) status.textContent = "The browser refused the clipboard: the key is selected, press Ctrl+C (⌘C).";
  }
});
