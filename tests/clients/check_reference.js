// Appended to a bundle README's Node or browser snippet by tests/test_app_clients.py: runs the snippet's
// predict() on every text of the bundle's reference.json, one text per run as it was computed, and prints how far
// the outputs and labels are from it as one line, "EDGEKIT-RESULT {json}" (the browser harness reads the console).
const reference = await Promise.resolve(read("./reference.json"));
const report = { texts: reference.texts.length, max_abs_diff: {}, labels_changed: {} };
for (const [i, text] of reference.texts.entries()) {
  const got = await predict([text]);
  for (const [name, rows] of Object.entries(reference.outputs)) {
    const diff = Math.max(...rows[i].map((want, j) => Math.abs(want - got[name][0][j])));
    report.max_abs_diff[name] = Math.max(report.max_abs_diff[name] ?? 0, diff);
  }
  for (const [task, names] of Object.entries(reference.labels)) {
    const index = argmax(got[reference.label_outputs[task]][0]);
    const label = labels[task] ? labels[task][index] : index;
    report.labels_changed[task] = (report.labels_changed[task] ?? 0) + (label === names[i] ? 0 : 1);
  }
}
console.log("EDGEKIT-RESULT " + JSON.stringify(report));
