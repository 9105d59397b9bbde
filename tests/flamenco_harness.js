// A stand-in for the Flamenco Manager's job compiler, for testing custom job types under Node.
//
//     node tests/flamenco_harness.js JOB_TYPE_FILE SETTINGS_JSON
//
// It implements the author API that job type scripts use (author.Task(name, type),
// author.Command(name, parameters), task.addCommand, task.addDependency, job.addTask, print),
// checks the JOB_TYPE settings the way the Manager does before compiling (known types, defaults
// and choices that match, required settings given), fills unset settings with their defaults,
// runs compileJob(job) and prints the authored tasks as JSON on stdout.

"use strict";
const fs = require("fs");
const vm = require("vm");

const SETTING_TYPES = { string: "string", int32: "number", float: "number", bool: "boolean" };

function fail(message) {
  process.stderr.write(`flamenco-harness: ${message}\n`);
  process.exit(1);
}

function makeAuthor() {
  return {
    Task(name, type) {
      if (typeof name !== "string" || !name) fail("author.Task needs a name");
      const task = { name, type, commands: [], dependencies: [] };
      task.addCommand = (command) => {
        if (!command || !command.__command) fail(`task ${name}: addCommand needs an author.Command`);
        task.commands.push(command);
      };
      task.addDependency = (other) => {
        if (!other || !other.commands) fail(`task ${name}: addDependency needs a task`);
        task.dependencies.push(other.name);
      };
      return task;
    },
    Command(name, parameters) {
      if (typeof name !== "string" || !name) fail("author.Command needs a type name");
      if (name === "exec" && (typeof parameters.exe !== "string" || !Array.isArray(parameters.args)))
        fail("exec commands need parameters {exe: string, args: [string]}");
      return { __command: true, name, parameters };
    },
  };
}

function checkSettings(jobType, submitted) {
  if (!jobType || typeof jobType.label !== "string" || !Array.isArray(jobType.settings))
    fail("JOB_TYPE needs a label and a settings list");
  const settings = {};
  const keys = new Set();
  for (const setting of jobType.settings) {
    if (keys.has(setting.key)) fail(`setting ${setting.key} is defined twice`);
    keys.add(setting.key);
    const jsType = SETTING_TYPES[setting.type];
    if (!jsType) fail(`setting ${setting.key}: unknown type ${setting.type}`);
    if ("default" in setting && typeof setting.default !== jsType)
      fail(`setting ${setting.key}: default ${setting.default} is not a ${setting.type}`);
    if (setting.choices && "default" in setting && !setting.choices.includes(setting.default))
      fail(`setting ${setting.key}: default not among its choices`);
    let value = setting.key in submitted ? submitted[setting.key] : setting.default;
    if (value === undefined) {
      if (setting.required) fail(`required setting ${setting.key} is missing`);
      continue;
    }
    if (typeof value !== jsType) fail(`setting ${setting.key}: ${value} is not a ${setting.type}`);
    if (setting.type === "int32" && !Number.isInteger(value))
      fail(`setting ${setting.key}: ${value} is not an integer`);
    if (setting.choices && !setting.choices.includes(value))
      fail(`setting ${setting.key}: ${value} is not one of ${setting.choices}`);
    settings[setting.key] = value;
  }
  for (const key of Object.keys(submitted))
    if (!keys.has(key)) fail(`submitted setting ${key} is not in JOB_TYPE`);
  return settings;
}

function main() {
  const [scriptPath, settingsPath] = process.argv.slice(2);
  const source = fs.readFileSync(scriptPath, "utf8");
  const logs = [];
  const context = vm.createContext({ author: makeAuthor(), print: (...a) => logs.push(a.join(" ")) });
  vm.runInContext(`${source}\n;this.__jobType = JOB_TYPE; this.__compile = compileJob;`, context,
                  { filename: scriptPath });
  const submitted = JSON.parse(fs.readFileSync(settingsPath, "utf8"));
  const job = { name: "test job", settings: checkSettings(context.__jobType, submitted), tasks: [] };
  job.addTask = (task) => {
    if (!task || !Array.isArray(task.commands)) fail("job.addTask needs an author.Task");
    if (job.tasks.some((t) => t.name === task.name)) fail(`two tasks named ${task.name}`);
    job.tasks.push(task);
  };
  try {
    context.__compile(job);
  } catch (error) {
    fail(`compileJob failed: ${error}`);
  }
  const tasks = job.tasks.map((t) => ({
    name: t.name, type: t.type, dependencies: t.dependencies,
    commands: t.commands.map((c) => ({ name: c.name, parameters: c.parameters })),
  }));
  process.stdout.write(JSON.stringify({ label: context.__jobType.label, settings: job.settings,
                                        tasks, log: logs }) + "\n");
}

main();
