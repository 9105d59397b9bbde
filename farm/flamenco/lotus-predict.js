// Flamenco custom job type: Lotus depth and normal maps for an image sequence or a movie.
//
// Install: copy this file into the Flamenco Manager's `scripts/` folder (next to the manager
// executable) and restart the Manager. Needs Flamenco 3.3 or newer (the `exec` command);
// `extra_args` needs 3.6 (`shellSplit`). Every Worker needs Blender with the Lotus extension
// installed and enabled (its preferences give the models when the model settings are empty).
// Each task runs, for one chunk of frames:
//     {blender} -b -c lotus predict INPUT --frames CHUNK --output DIR [options]
// Frames already finished are skipped, so a requeued task only computes what is missing.
//
// The Manager stores the submitted settings as they come (no defaults, no checks: a missing value
// reaches the Worker as the text "<nil>"), so compileJob applies every default and check itself,
// and refuses the job with a message (an exception: the submitter sees it) instead of authoring
// tasks that cannot work.

const JOB_TYPE = {
  label: "Lotus Depth & Normals",
  description: "Depth and/or normal maps for every frame of an image sequence or movie, " +
    "computed by the Lotus Blender extension in chunks of frames",
  settings: [
    { key: "input", type: "string", subtype: "file_path", required: true,
      description: "Plate sequence (shot_####.exr, shot_%04d.exr, or any one frame of it), " +
        "folder or movie" },
    { key: "frames", type: "string", required: true,
      description: "Frames to compute, e.g. 1001-1100 (or 1-50,60-80)" },
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
      description: "More options for `lotus predict`, split like a shell command line " +
        "(quotes work; Flamenco 3.6+)" },
  ],
};

// Blender's still-image extensions (bpy.path.extensions_image, 4.2 to 5.3): a picked file with
// one of these is a frame of a sequence. Movies and folders are passed on as they are.
const LOTUS_IMAGE_EXTENSIONS = [
  ".avif", ".bmp", ".cin", ".dds", ".dpx", ".exr", ".hdr", ".j2c", ".jp2", ".jpeg", ".jpg",
  ".pdd", ".png", ".psb", ".psd", ".rgb", ".rgba", ".sgi", ".tga", ".tif", ".tiff", ".tx", ".webp",
];
const LOTUS_JS_TYPES = { string: "string", int32: "number", float: "number", bool: "boolean" };
const LOTUS_PLACEHOLDERS = ["<nil>", "undefined", "null", "None"];

function lotusLabel(setting) {
  return setting.key.replace(/_/g, " ");
}

// The submitted settings with every default applied and every value checked; throws a message
// naming the setting otherwise.
function lotusSettings(submitted) {
  const known = new Set(JOB_TYPE.settings.map((s) => s.key));
  for (const key of Object.keys(submitted)) {
    if (!known.has(key)) {
      throw `Lotus: unknown setting "${key}" (known: ${JOB_TYPE.settings.map((s) => s.key).join(", ")})`;
    }
  }
  const settings = {};
  for (const setting of JOB_TYPE.settings) {
    let value = submitted[setting.key];
    if (value === undefined || value === null) {
      if (!("default" in setting)) throw `Lotus: the "${lotusLabel(setting)}" setting is missing`;
      value = setting.default;
    }
    if (typeof value !== LOTUS_JS_TYPES[setting.type] ||
        (setting.type === "int32" && !Number.isInteger(value))) {
      throw `Lotus: "${lotusLabel(setting)}" must be a ${setting.type}, not ${JSON.stringify(value)}`;
    }
    if (typeof value === "string") {
      value = value.trim();
      if (LOTUS_PLACEHOLDERS.includes(value))
        throw `Lotus: "${lotusLabel(setting)}" holds the placeholder "${value}", not a value`;
      if (setting.required && !value) throw `Lotus: the "${lotusLabel(setting)}" setting is empty`;
    }
    if (setting.choices && !setting.choices.includes(value)) {
      throw `Lotus: "${lotusLabel(setting)}" must be one of ${setting.choices.join(", ")}, ` +
        `not "${value}"`;
    }
    const min = setting.propargs && setting.propargs.min;
    if (min !== undefined && value < min) throw `Lotus: "${lotusLabel(setting)}" must be at least ${min}`;
    settings[setting.key] = value;
  }
  for (const key of ["input", "output"]) lotusCheckPath(key, settings[key]);
  for (const key of ["depth_model", "normal_model"]) {
    if (settings[key].startsWith("//")) lotusCheckPath(key, settings[key]);
  }
  return settings;
}

// Workers run in their own folder, so a path must be absolute (or start with a Flamenco
// variable such as {render}); a Blender-relative path (//plates) means nothing to them.
function lotusCheckPath(key, value) {
  const name = key.replace(/_/g, " ");
  if (value.startsWith("//")) {
    throw `Lotus: "${name}" is relative to the blend file (${value}): make it absolute ` +
      "(untick Relative Path in the file browser)";
  }
  const absolute = /^([\\/]|[A-Za-z]:[\\/]|\{[^}]+\})/.test(value);
  if (!absolute) throw `Lotus: "${name}" must be an absolute path, not "${value}"`;
}

// "/plates/shot_1001.exr" (a frame picked in the file browser) -> "/plates/shot_####.exr".
// Patterns, folders and movies are returned as they are; a single still image is refused.
function lotusSequencePattern(input) {
  const cut = Math.max(input.lastIndexOf("/"), input.lastIndexOf("\\")) + 1;
  const folder = input.slice(0, cut);
  const name = input.slice(cut);
  if (/#|%0?\d*d/.test(name)) return input;
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 ? name.slice(dot).toLowerCase() : "";
  if (!LOTUS_IMAGE_EXTENSIONS.includes(extension)) return input;
  // The last run of digits in the name is the frame number (the command line's own rule).
  const match = /^(.*?)(\d+)(\D*)$/.exec(name.slice(0, dot));
  if (!match) {
    throw `Lotus: "${name}" is a single image, not a sequence: give a frame of the sequence, ` +
      "a pattern such as shot_####.exr, or its folder";
  }
  return folder + match[1] + "#".repeat(match[2].length) + match[3] + name.slice(dot);
}

function lotusExtraArgs(text) {
  if (!text) return [];
  if (typeof shellSplit !== "function") {
    throw "Lotus: \"extra args\" needs Flamenco 3.6 or newer (shellSplit); leave it empty here";
  }
  try {
    return shellSplit(text);
  } catch (error) {
    throw `Lotus: "extra args" cannot be split (${error}): ${text}`;
  }
}

function lotusArgs(settings, chunk, extraArgs) {
  const args = ["-b", "-c", "lotus", "predict", settings.input,
                "--frames", chunk, "--output", settings.output,
                "--task", settings.task, "--device", settings.device,
                "--precision", settings.precision];
  if (settings.depth_model) args.push("--depth-model", settings.depth_model);
  if (settings.normal_model) args.push("--normal-model", settings.normal_model);
  if (settings.resolution > 0) args.push("--resolution", String(settings.resolution));
  if (settings.tiled) args.push("--tiled");
  args.push(settings.stabilize ? "--stabilize" : "--no-stabilize");
  return args.concat(extraArgs);
}

function compileJob(job) {
  const settings = lotusSettings(job.settings);
  settings.input = lotusSequencePattern(settings.input);
  const extraArgs = lotusExtraArgs(settings.extra_args);
  let chunks;
  try {
    chunks = frameChunker(settings.frames, settings.chunk_size);
  } catch (error) {
    throw `Lotus: "frames" is not a frame range such as 1001-1100 or 1-50,60-80 ` +
      `(${settings.frames}): ${error}`;
  }
  // What will run, as the job's settings: the web interface shows the values really used.
  for (const key of Object.keys(settings)) job.settings[key] = settings[key];

  let previous = null;
  for (const chunk of chunks) {
    const task = author.Task(`lotus-${chunk}`, "blender");
    // No step count: `exec` reports no steps of its own, so the Worker counts the command as
    // one step when it finishes (Flamenco 3.8+ shows it in the task list).
    task.addCommand(author.Command("exec", {
      exe: "{blender}",
      args: lotusArgs(settings, chunk, extraArgs),
    }));
    if (settings.chain_chunks && previous !== null) task.addDependency(previous);
    job.addTask(task);
    previous = task;
  }
  print(`Lotus: ${chunks.length} tasks for frames ${settings.frames} of ${settings.input}`);
}
