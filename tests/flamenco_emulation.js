// Flamenco as a custom job type meets it, emulated under Node from Flamenco's own source
// (projects.blender.org/studio/flamenco: main of April 2026, "3.9 - in development"; 3.3.1 for
// what older Managers lack). It is neither kinder nor stricter than the real thing:
//
//   Manager, job submission (internal/manager/api_impl/jobs.go SubmitJob, compileSubmittedJob):
//     - two-way variables replace path prefixes of string settings (api_impl/varrepl.go
//       replaceTwoWayVariables), then the settings are copied as submitted (job_compilers.go
//       Compile: maps.Copy): no defaults, no `required`, no `choices`, no types are checked;
//     - compileJob(job) runs in goja with the globals of scripts.go newGojaVM: print, alert (both
//       only log), frameChunker and formatTimestampLocal (js_globals.go), frameCount, shellSplit
//       (3.6+, google/shlex Split), author (author.go), path and process;
//     - an exception from compileJob rejects the job: HTTP 400 with the error text (goja adds
//       " at compileJob (file:line)"), which Blender's add-on checks before sending any file and
//       reports as an error (addon/flamenco/operators.py _check_job); alert() stops nothing;
//     - author.go: job.addTask stores a copy of the task as it is then; author.Command's third
//       argument is the command's step count (3.8+); persistence/jobs.go: a task's steps_total is
//       the sum of max(1, step count) over its commands.
//   Manager, task assignment (api_impl/varrepl.go replaceTaskVariables, config/variables.go
//     Expand): "{name}" variables are replaced in string parameters and in the string items of
//     list parameters; other values pass untouched. Parameters travel as JSON (numbers arrive as
//     float64, undefined/null as nil).
//   Worker (internal/worker/cmd_executor.go registry and cmdParameterAsStrings, command_exec.go):
//     `exec` (3.3+) needs a non-empty string `exe`; each `args` item that is not a string becomes
//     fmt.Sprintf("%v", item): nil -> "<nil>", 25.0 -> "25", true -> "true". Running the argv and
//     cancelling it are left to the caller: a cancelled task is seen by the Worker's
//     mayIKeepRunning check (state_awake.go runTask, every 10 s), which cancels the context of
//     exec.CommandContext, and Go then kills the process (SIGKILL).
//
//     node tests/flamenco_emulation.js job-type SCRIPT
//     node tests/flamenco_emulation.js submit SCRIPT SUBMISSION_JSON_FILE
//
// A submission: {"settings": {...}, "version": "3.8", "variables": {"blender": "..."},
// "two_way_variables": {"storage": "/shared"}}. Prints one JSON object.

"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const FEATURES = { exec: [3, 3], shellSplit: [3, 6], steps: [3, 8] };

function atLeast(version, feature) {
  const [major, minor] = version.split(".").map(Number);
  const [fMajor, fMinor] = FEATURES[feature];
  return major > fMajor || (major === fMajor && minor >= fMinor);
}

class GoError extends Error {
  // goja turns an error returned by a Go function into a JS exception of this name.
  constructor(message) { super(message); this.name = "GoError"; }
}

// -- js_globals.go ------------------------------------------------------------------------------

function frameRangeExplode(frameRange) {
  const frames = new Set();
  const regular = frameRange.split("..").join("-");
  const parseInt64 = (text) => {
    const trimmed = text.trim();
    if (!/^[+-]?\d+$/.test(trimmed)) throw new GoError(`strconv.ParseInt: parsing "${trimmed}": invalid syntax`);
    return Number(trimmed);
  };
  for (const part of regular.split(",")) {
    const startEnd = part.split("-");
    try {
      if (startEnd.length === 1) frames.add(parseInt64(startEnd[0]));
      else if (startEnd.length === 2) {
        const start = parseInt64(startEnd[0]);
        const end = parseInt64(startEnd[1]);
        for (let frame = start; frame <= end; frame++) frames.add(frame);
      } else throw new GoError("");
    } catch (error) {
      const cause = error.message ? ` (${error.message})` : "";
      throw new GoError(`invalid range "${regular}": ${part}${cause}`);
    }
  }
  return [...frames].sort((a, b) => a - b);
}

function frameRangeMerge(frames) {
  const ranges = [];
  const appendRange = (from, to) => {
    if (from === to) ranges.push(String(from));
    else if (from + 1 === to) ranges.push(String(from), String(to));
    else ranges.push(`${from}-${to}`);
  };
  let start = frames[0];
  let prev = frames[0];
  for (const frame of frames) {
    if (frame > prev + 1) { appendRange(start, prev); start = frame; }
    prev = frame;
  }
  appendRange(start, frames[frames.length - 1]);
  return ranges.join(",");
}

function frameChunker(frameRange, chunkSize) {
  frameRange = String(frameRange).trim();
  chunkSize = Math.trunc(Number(chunkSize)) || 0;  // goja: JS number -> Go int
  if (!frameRange) throw new GoError(`invalid range "${frameRange}": empty range`);
  if (chunkSize < 1) throw new GoError(`invalid chunk size, must be positive number: ${chunkSize}`);
  const frames = frameRangeExplode(frameRange);
  if (!frames.length) throw new GoError(`invalid range "${frameRange}": empty range`);
  const chunks = [];
  for (let i = 0; i < frames.length; i += chunkSize) chunks.push(frameRangeMerge(frames.slice(i, i + chunkSize)));
  return chunks;
}

// google/shlex Split at e7afc7fbc510 (Flamenco's go.mod): whitespace separates words, '...'
// is literal, "..." and a bare backslash escape the next rune, '#' at a word's start comments
// out the rest of the line; every other rune is part of a word.
function shlexSplit(text) {
  const words = [];
  let state = "start";
  let value = "";
  let isComment = false;
  const finish = () => { if (!isComment) words.push(value); value = ""; isComment = false; state = "start"; };
  for (const rune of text) {
    const space = " \t\r\n".includes(rune);
    switch (state) {
      case "start":
        if (space) break;
        if (rune === '"') state = "dquote";
        else if (rune === "'") state = "squote";
        else if (rune === "\\") state = "escape";
        else if (rune === "#") { isComment = true; state = "comment"; }
        else { value += rune; state = "word"; }
        break;
      case "word":
        if (space) finish();
        else if (rune === '"') state = "dquote";
        else if (rune === "'") state = "squote";
        else if (rune === "\\") state = "escape";
        else value += rune;
        break;
      case "escape": value += rune; state = "word"; break;
      case "dquote":
        if (rune === '"') state = "word";
        else if (rune === "\\") state = "dquote-escape";
        else value += rune;
        break;
      case "dquote-escape": value += rune; state = "dquote"; break;
      case "squote":
        if (rune === "'") state = "word"; else value += rune;
        break;
      case "comment":
        if (rune === "\n") finish(); else value += rune;
        break;
    }
  }
  if (state === "escape" || state === "dquote-escape") throw new GoError("EOF found after escape character");
  if (state === "dquote" || state === "squote") throw new GoError("EOF found when expecting closing quote");
  if (state !== "start") finish();
  return words;
}

// pkg/crosspath (path module): forward-slash paths.
const pathModule = {
  basename: (p) => path.posix.basename(p),
  dirname: (p) => path.posix.dirname(p),
  join: (...parts) => path.posix.join(...parts),
  stem: (p) => path.posix.basename(p, path.posix.extname(p)),
};

// -- author.go ----------------------------------------------------------------------------------

let uuidCounter = 0;

function makeAuthor(version) {
  return {
    Task(name, taskType) {
      name = String(name).trim();
      taskType = String(taskType).trim();
      if (!name) throw new GoError("author.Task(name, type): name is required");
      if (!taskType) throw new GoError("author.Task(name, type): type is required");
      const task = { uuid: `task-${++uuidCounter}`, name, type: taskType, priority: 50,
                     commands: [], dependencies: [] };
      task.addCommand = (command) => { task.commands.push({ ...command }); };
      task.addDependency = (dep) => { task.dependencies.push(dep); };
      return task;
    },
    Command(name, parameters, totalStepCount) {
      // Before 3.8 Command(cmdName, parameters): goja drops the extra argument.
      const steps = atLeast(version, "steps") ? Math.trunc(Number(totalStepCount)) || 0 : 0;
      return { name: String(name), parameters, totalStepCount: steps };
    },
  };
}

// goja's Export of a JS value into Go (map[string]any, []any, int64/float64, nil), then the JSON
// the Manager stores and the Worker decodes.
function exportToGo(value) {
  if (value === undefined || value === null) return null;
  if (Array.isArray(value)) return value.map(exportToGo);
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new Error(`json: unsupported value: ${value}`);
  }
  if (typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) if (typeof value[key] !== "function") out[key] = exportToGo(value[key]);
    return out;
  }
  return value;
}

// fmt.Sprintf("%v", v) for a JSON-decoded value (numbers are float64).
function goFormatV(value) {
  if (value === null) return "<nil>";
  if (typeof value === "number") {
    if (Object.is(value, -0)) return "-0";
    const exp = value === 0 ? 0 : Math.floor(Math.log10(Math.abs(value)));
    if (exp < -4 || exp >= 6) {  // %g with the shortest digits: strconv uses precision 6 here
      const [mantissa, e] = value.toExponential().split("e");
      const sign = e[0] === "-" ? "-" : "+";
      const digits = e.replace(/^[+-]/, "").padStart(2, "0");
      return `${mantissa}e${sign}${digits}`;
    }
    return String(value);
  }
  if (typeof value === "boolean" || typeof value === "string") return String(value);
  if (Array.isArray(value)) return `[${value.map(goFormatV).join(" ")}]`;
  return `map[${Object.keys(value).sort().map((k) => `${k}:${goFormatV(value[k])}`).join(" ")}]`;
}

// -- config/variables.go ------------------------------------------------------------------------

function replaceTwoWay(settings, twoWay) {
  for (const key of Object.keys(settings)) {
    if (typeof settings[key] !== "string") continue;
    for (const [name, prefix] of Object.entries(twoWay)) {
      if (settings[key].toLowerCase().startsWith(prefix.toLowerCase())) {
        settings[key] = `{${name}}${settings[key].slice(prefix.length)}`;
      }
    }
  }
}

function expand(text, variables) {
  for (const [name, value] of Object.entries(variables)) text = text.split(`{${name}}`).join(value);
  return text;
}

// -- worker ---------------------------------------------------------------------------------------

function workerCommand(command, version) {
  if (command.name !== "exec" || !atLeast(version, "exec")) {
    return { error: `unknown command: "${command.name}"` };
  }
  const params = command.parameters || {};
  if (typeof params.exe !== "string" || params.exe === "") return { error: "missing 'exe' parameter" };
  let args = [];
  if ("args" in params) {
    if (!Array.isArray(params.args)) return { error: "invalid 'args' parameter: cannot convert to list of strings" };
    args = params.args.map((item) => (typeof item === "string" ? item : goFormatV(item)));
  }
  return { argv: [params.exe, ...args] };
}

// -- main -----------------------------------------------------------------------------------------

function loadScript(scriptPath, version, logs) {
  const globals = {
    print: (...args) => logs.push(["print", args.map(String).join(" ")]),
    alert: (...args) => logs.push(["alert", args.map(String).join(" ")]),
    frameChunker,
    frameCount: (range) => frameRangeExplode(String(range)).length,
    formatTimestampLocal: (date) => date.toISOString().slice(0, 19).replace("T", "_").replace(/:/g, ""),
    author: makeAuthor(version),
    path: pathModule,
    process: { cwd: () => process.cwd(), platform: process.platform },
  };
  if (atLeast(version, "shellSplit")) globals.shellSplit = (text) => shlexSplit(String(text));
  const context = vm.createContext(globals);
  vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context, { filename: path.basename(scriptPath) });
  return context;
}

function submit(scriptPath, submission) {
  const version = submission.version || "3.8";
  const logs = [];
  const context = loadScript(scriptPath, version, logs);
  const settings = { ...(submission.settings || {}) };
  replaceTwoWay(settings, submission.two_way_variables || {});
  const tasks = [];
  const job = {
    name: "test job", jobType: path.basename(scriptPath, ".js").replace(/_/g, "-"), priority: 50,
    created: new Date(), settings, metadata: {},
    addTask: (task) => tasks.push({ ...task, commands: [...task.commands], dependencies: [...task.dependencies] }),
  };
  const compileJob = vm.runInContext("typeof compileJob === 'function' ? compileJob : null", context);
  if (!compileJob) return { status: 400, error: "script does not define a compileJob(job) function", log: logs };
  try {
    compileJob(job);
  } catch (thrown) {
    return { status: 400, error: String(thrown), log: logs };
  }
  let stored;
  try {
    stored = tasks.map((task) => ({
      name: task.name, type: task.type, dependencies: task.dependencies.map((dep) => dep.name),
      commands: task.commands.map((command) => ({
        name: command.name, total_step_count: command.totalStepCount,
        parameters: JSON.parse(JSON.stringify(exportToGo(command.parameters))),
      })),
    }));
  } catch (error) {
    return { status: 500, error: `error persisting job in database: ${error.message}`, log: logs };
  }
  const variables = { ...(submission.variables || {}), ...(submission.two_way_variables || {}) };
  for (const task of stored) {
    if (atLeast(version, "steps")) {
      task.steps_total = task.commands.reduce((sum, c) => sum + Math.max(1, c.total_step_count), 0);
    }
    for (const command of task.commands) {
      for (const [key, value] of Object.entries(command.parameters || {})) {
        if (typeof value === "string") command.parameters[key] = expand(value, variables);
        else if (Array.isArray(value)) {
          command.parameters[key] = value.map((item) => (typeof item === "string" ? expand(item, variables) : item));
        }
      }
      Object.assign(command, workerCommand(command, version));
    }
  }
  return { status: 200, settings: exportToGo(settings), tasks: stored, log: logs };
}

function jobType(scriptPath) {
  const context = loadScript(scriptPath, "3.8", []);
  return vm.runInContext("typeof JOB_TYPE === 'undefined' ? null : JOB_TYPE", context);
}

function main() {
  const [mode, scriptPath, submissionPath] = process.argv.slice(2);
  let result;
  if (mode === "job-type") result = jobType(scriptPath);
  else if (mode === "submit") result = submit(scriptPath, JSON.parse(fs.readFileSync(submissionPath, "utf8")));
  else throw new Error(`unknown mode ${mode}`);
  process.stdout.write(JSON.stringify(result) + "\n");
}

main();
