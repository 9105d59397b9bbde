// Flamenco custom job type: Lotus depth and normal maps for an image sequence or a movie.
//
// Install: copy this file into the Flamenco Manager's `scripts/` folder (next to the manager
// executable) and restart the Manager. Every Worker needs Blender with the Lotus extension
// installed and enabled (its preferences give the defaults of the empty settings below).
// Each task runs, for one chunk of frames:
//     {blender} -b -c lotus predict INPUT --frames A-B --output DIR [options]
// Frames already finished are skipped, so a requeued task only computes what is missing.

const JOB_TYPE = {
  label: "Lotus Depth & Normals",
  description: "Depth and/or normal maps for every frame of an image sequence or movie, " +
    "computed by the Lotus Blender extension in chunks of frames",
  settings: [
    { key: "input", type: "string", subtype: "file_path", required: true,
      description: "Plate sequence (shot_####.exr or shot_%04d.exr), folder or movie" },
    { key: "frames", type: "string", required: true,
      description: "Frame range, e.g. 1001-1100 (or 1-50,60-80)" },
    { key: "chunk_size", type: "int32", default: 25, propargs: { min: 1 },
      description: "Frames per task: the model loads once per task, so larger is faster" },
    { key: "output", type: "string", subtype: "dir_path", required: true,
      description: "Folder for the maps" },
    { key: "task", type: "string", choices: ["depth", "normal", "both"], default: "depth",
      description: "Which maps to write" },
    { key: "depth_model", type: "string", default: "",
      description: "Depth checkpoint (Hugging Face repo id or folder); empty: the Worker's preferences" },
    { key: "normal_model", type: "string", default: "",
      description: "Normal checkpoint (repo id or folder); empty: the Worker's preferences" },
    { key: "device", type: "string", choices: ["auto", "cuda", "mps", "cpu"], default: "auto" },
    { key: "precision", type: "string", choices: ["auto", "fp32", "fp16", "bf16"], default: "auto" },
    { key: "resolution", type: "int32", default: 0, propargs: { min: 0 },
      description: "Longest edge the model sees; 0: the Worker's preferences" },
    { key: "tiled", type: "bool", default: false,
      description: "Full-resolution maps from overlapping tiles (slower)" },
    { key: "stabilize", type: "bool", default: true,
      description: "Align each frame's depth to the frames before it (removes flicker)" },
    { key: "chain_chunks", type: "bool", default: false,
      description: "Run chunks one after the other, so depth stabilization continues across " +
        "chunk boundaries (no parallelism)" },
    { key: "extra_args", type: "string", default: "",
      description: "More options for `lotus predict`, separated by spaces" },
  ],
};

// "1001-1100" or "1-50,60-80" -> [[first, last], ...] with at most chunkSize frames each.
function lotusFrameChunks(frames, chunkSize) {
  const size = Math.max(1, Math.floor(chunkSize || 1));
  const chunks = [];
  for (const part of String(frames).split(",")) {
    const text = part.trim();
    if (!text) continue;
    const match = /^(-?\d+)(?:\s*(?:-|\.\.|:)\s*(-?\d+))?$/.exec(text);
    if (!match) throw `Lotus: not a frame range: "${text}"`;
    const first = parseInt(match[1], 10);
    const last = match[2] === undefined ? first : parseInt(match[2], 10);
    if (last < first) throw `Lotus: frame range "${text}" ends before it starts`;
    for (let start = first; start <= last; start += size) {
      chunks.push([start, Math.min(last, start + size - 1)]);
    }
  }
  if (!chunks.length) throw "Lotus: no frames given";
  return chunks;
}

function lotusArgs(settings, first, last) {
  const args = ["-b", "-c", "lotus", "predict", settings.input,
                "--frames", `${first}-${last}`, "--output", settings.output,
                "--task", settings.task, "--device", settings.device,
                "--precision", settings.precision];
  if (settings.depth_model) args.push("--depth-model", settings.depth_model);
  if (settings.normal_model) args.push("--normal-model", settings.normal_model);
  if (settings.resolution > 0) args.push("--resolution", String(settings.resolution));
  if (settings.tiled) args.push("--tiled");
  args.push(settings.stabilize ? "--stabilize" : "--no-stabilize");
  for (const extra of String(settings.extra_args || "").split(" ")) {
    if (extra) args.push(extra);
  }
  return args;
}

function compileJob(job) {
  const settings = job.settings;
  let previous = null;
  for (const [first, last] of lotusFrameChunks(settings.frames, settings.chunk_size)) {
    const task = author.Task(`lotus-${first}-${last}`, "blender");
    task.addCommand(author.Command("exec", {
      exe: "{blender}",
      args: lotusArgs(settings, first, last),
    }));
    if (settings.chain_chunks && previous !== null) task.addDependency(previous);
    job.addTask(task);
    previous = task;
  }
}
