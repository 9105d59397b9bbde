"""The sidebar at its default width: wrapped messages, one progress bar per run, the cancelling
state, the last error cleared when a run starts, source buttons only for images with pixels,
every panel drawing with real UILayout calls. (What it looks like: tests/gui/.)"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tests.blender_side import Reports, drive, gradient, new_image, remove_images

# The default sidebar at 1920x1080 (measured in the GUI check: 291 px at UI scale 1.04).
SIDEBAR_PX = 291
ISSUE_ERROR = ("Depth coffee: not a Lotus checkpoint: unet/config.json is missing in "
               "/home/artist/models/lotus-depth-g-v2-1-disparity")


def _measure_chars(text):
    return 7.0 * len(text)


def test_wrap_text_breaks_between_words_and_inside_long_paths(lotus):
    wrap = lotus.panels.wrap_text
    assert wrap("", 70, _measure_chars) == []
    assert wrap("short", 70, _measure_chars) == ["short"]
    lines = wrap("the model folder does not exist here", 70, _measure_chars)
    assert lines == ["the model", "folder", "does not", "exist here"]
    assert all(_measure_chars(line) <= 70 for line in lines)
    # A path wider than a line is cut, after a separator when one is near the end.
    lines = wrap("in /tmp/lotus_models/depth", 70, _measure_chars)
    assert all(_measure_chars(line) <= 70 for line in lines)
    assert "".join(lines).replace("in", "", 1) == "/tmp/lotus_models/depth"
    assert lines[1].endswith(("/", "_"))
    # Paragraphs stay paragraphs; a single character wider than a line still makes progress.
    assert wrap("one\ntwo", 70, _measure_chars) == ["one", "two"]
    assert wrap("abc", 3, _measure_chars) == ["a", "b", "c"]


def test_fit_text_takes_the_first_that_fits(lotus):
    fit = lotus.panels.fit_text
    assert fit(["40%  image 3/12: predicting", "40%  predicting", "40%"], 120, _measure_chars) \
        == "40%  predicting"
    assert fit(["long text", "40%"], 1, _measure_chars) == "40%"


def _sidebar_context(space='VIEW_3D', width=SIDEBAR_PX):
    import bpy
    context = bpy.context
    return SimpleNamespace(window_manager=context.window_manager, preferences=context.preferences,
                           scene=context.scene, active_object=None,
                           space_data=SimpleNamespace(type=space),
                           region=SimpleNamespace(width=width))


def test_error_lines_fit_the_default_sidebar_in_blenders_font(lotus):
    panels = lotus.panels
    context = _sidebar_context()
    inset = panels.PANEL_INSET_PX + panels.BOX_INSET_PX + panels.ICON_PX
    width = panels.text_width(context, inset)
    measure = panels.text_measure(context)
    assert 150 < width < SIDEBAR_PX
    assert measure(ISSUE_ERROR) > 2 * width   # one label would be cut
    lines = panels.wrap_text(ISSUE_ERROR, width, measure)
    assert len(lines) >= 3 and all(measure(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == ISSUE_ERROR.replace(" ", "")   # all, in order
    # Wider sidebar, fewer lines.
    wide = panels.wrap_text(ISSUE_ERROR, panels.text_width(_sidebar_context(width=600), inset),
                            measure)
    assert len(wide) < len(lines)


def operator_rna(idname):
    """The RNA of an operator's properties, from its id ("lotus.predict_image"); a KeyError for
    an operator that does not exist."""
    import bpy
    module, _, name = idname.partition(".")
    if name not in dir(getattr(bpy.ops, module)):
        raise KeyError(f"No operator {idname}")
    return getattr(getattr(bpy.ops, module), name).get_rna_type()


_PYTHON_TYPES = {'BOOLEAN': (bool,), 'INT': (int,), 'FLOAT': (int, float), 'STRING': (str,),
                 'ENUM': (str, set)}


class _StrictOperatorProperties:
    """What layout.operator() returns in place of the button's OperatorProperties: a property
    the operator does not have, or a value of the wrong type or outside its enum, raises as
    Blender would (AttributeError / TypeError); what is set goes to the layout's log."""

    def __init__(self, log, idname, enabled):
        self.__dict__.update(log=log, idname=idname, enabled=enabled,
                             rna=operator_rna(idname))

    def __setattr__(self, name, value):
        properties = self.rna.properties
        if name not in properties or name == "rna_type":
            raise AttributeError(f"{self.idname} has no property {name!r}")
        prop = properties[name]
        if prop.type in _PYTHON_TYPES and not isinstance(value, _PYTHON_TYPES[prop.type]):
            raise TypeError(f"{self.idname}.{name} is {prop.type}, not {value!r}")
        if prop.type == 'ENUM' and not prop.is_enum_flag and len(prop.enum_items) \
                and value not in prop.enum_items.keys():
            raise TypeError(f"{self.idname}.{name}: {value!r} is not one of "
                            f"{prop.enum_items.keys()}")
        self.log.append(("set", name, value, self.enabled))
        self.__dict__[name] = value


CONTAINERS = ("row", "column", "box", "split", "grid_flow", "column_flow")


class _StrictLayout:
    """Stands in for UILayout: only calls UILayout really has, properties that resolve, operators
    that exist and only their own properties set on their buttons, and a log of what is drawn.
    It also keeps the layout's tree (containers and their items) for its height in pixels."""

    def __init__(self, log, enabled=True, kind="column", align=False):
        self.__dict__.update(log=log, enabled=enabled, alert=False, kind=kind, align=align,
                             children=[])

    def __getattr__(self, name):
        import bpy
        if name not in bpy.types.UILayout.bl_rna.functions:
            raise AttributeError(f"UILayout has no {name}()")

        def call(*args, **kw):
            if name in ("prop", "prop_enum", "template_ID"):
                data, path = args[0], args[1]
                data.path_resolve(path)  # raises for unknown properties
            self.log.append((name, args, kw, self.enabled))
            if name in CONTAINERS:
                child = _StrictLayout(self.log, self.enabled, name, bool(kw.get("align")))
                self.children.append(child)
                return child
            self.children.append(name)
            if name == "operator":
                return _StrictOperatorProperties(self.log, args[0], self.enabled)
            return _StrictLayout(self.log, self.enabled)
        return call

    def __setattr__(self, name, value):
        import bpy
        if name not in bpy.types.UILayout.bl_rna.properties:
            raise AttributeError(f"UILayout has no {name}")
        self.__dict__[name] = value


def _draw(panel_name, context):
    import bpy
    log = []
    panel = getattr(bpy.types, panel_name)
    if hasattr(panel, "poll") and not panel.poll(context):
        return None
    getattr(panel, "draw")(SimpleNamespace(layout=_StrictLayout(log)), context)
    if hasattr(panel, "draw_header_preset"):
        panel.draw_header_preset(SimpleNamespace(layout=_StrictLayout(log)), context)
    return log


def _texts(log, kind):
    return [kw.get("text") for name, _args, kw, _enabled in log if name == kind]


def _fake_job(lotus, tmp_path, **fields):
    settings = lotus.worker_session.WorkerSettings(python="python", log_path=str(tmp_path / "log"),
                                         extra_paths=())
    output = lotus.outputs.OutputSettings(folder=str(tmp_path), temporary=False)
    defaults = dict(task="depth", model={}, inputs=[], job_dir=str(tmp_path), options={},
                    output=output, worker=settings, label="Depth photo")
    defaults.update(fields)
    return lotus.job_queue.Job(**defaults)


def test_every_lotus_panel_draws_uncut_in_both_spaces(lotus, tmp_path, fresh_data):
    """Sources, progress, error, options and the builders draw with real UILayout calls; texts
    that the panel makes itself fit the default width."""
    import bpy
    panels, manager = lotus.panels, lotus.job_queue.manager
    running = _fake_job(lotus, tmp_path, state=lotus.job_queue.RUNNING, stage="image 3/12: predicting",
                        fraction=0.5, run_parts=2, run_part=1, run_id="run1",
                        run_label="Depth & Normals photo (+11)", task="normal")
    manager.current, manager.last_error = running, ISSUE_ERROR
    manager.queue.append(_fake_job(lotus, tmp_path, run_id="run2"))
    photo = bpy.data.images.new("panel_photo", 4, 4)
    for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
        getattr(bpy.context.scene, name).photo = photo
    settings = bpy.context.scene.lotus_predict
    settings.tiled = True
    try:
        for space, main in (('VIEW_3D', "LOTUS_PT_view3d"), ('IMAGE_EDITOR', "LOTUS_PT_image_editor")):
            context = _sidebar_context(space)
            log = _draw(main, context)
            measure = panels.text_measure(context)
            # The three task buttons share one row: their short names fit a third of it.
            row_third = panels.text_width(context, panels.PANEL_INSET_PX) / 3
            tasks = [args[2] for name, args, _kw, _e in log if name == "prop_enum"]
            assert tasks == ['DEPTH', 'NORMAL', 'BOTH']
            assert all(measure(text) + 12 < row_third for text in _texts(log, "prop_enum"))
            # One bar for the whole run, percentage first: 75% (second half of two parts).
            bars = [kw for name, _a, kw, _e in log if name == "progress"]
            assert len(bars) == 1 and bars[0]["factor"] == pytest.approx(0.75)
            assert bars[0]["text"].startswith("75%")
            labels = _texts(log, "label")
            assert "Depth & Normals photo (+11)" in labels and "1 more waiting" in labels
            error_lines = [line for line in labels if line and line in ISSUE_ERROR]
            assert len(error_lines) >= 3
            assert ("Active Image" in _texts(log, "operator")) == (space == 'IMAGE_EDITOR')
            options = _draw(main + "_options", context)
            assert {args[1] for name, args, _kw, _e in options if name == "prop"} == \
                {"tiled", "seamless", "render_pass", "frame_start", "frame_end", "stabilize"}
            assert "Tiled" in _texts(options, "label")  # the collapsed header says what is on
        context = _sidebar_context()
        for panel in ("LOTUS_PT_scene25d", "LOTUS_PT_scene25d_options", "LOTUS_PT_materials",
                      "LOTUS_PT_materials_options", "LOTUS_PT_relight", "LOTUS_PT_relight_options"):
            log = _draw(panel, context)
            for line in _texts(log, "label"):
                assert panels.text_measure(context)(line) <= panels.text_width(
                    context, panels.PANEL_INSET_PX + panels.ICON_PX), line
        # No active 2.5D object: no Live Mesh panel.
        assert _draw("LOTUS_PT_scene25d_live", context) is None
    finally:
        manager.current, manager.last_error = None, ""
        manager.queue.clear()
        settings.tiled = False
        for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
            getattr(bpy.context.scene, name).photo = None


# What fitted beside a checkbox in the real window at the default width (Debian's 5.2.2 under
# Xvfb): "Automatic Depth R..." in the 2.5D Options and "Full Resolution (Til..." in the file
# browser's side panel, the same width in Blender's font.
FITTED_CHECKBOX_TEXT = "Automatic Depth R..."


def _checkbox_texts(log, owner_type):
    """The texts of the checkboxes drawn for properties of owner_type (their own name unless
    the panel gives one)."""
    texts = []
    for name, args, kw, _enabled in log:
        if name != "prop" or not isinstance(args[0], owner_type):
            continue
        prop = args[0].bl_rna.properties[args[1]]
        if prop.type == 'BOOLEAN':
            texts.append(kw.get("text", prop.name))
    return texts


def test_checkbox_labels_are_never_cut(lotus):
    """Checkboxes in the builders' Options (split layout: the label beside the box in the right
    column) and in Image Files...' side panel fit where the real window showed they are cut."""
    import bpy
    panels = lotus.panels
    context = _sidebar_context()
    measure = panels.text_measure(context)
    room = measure(FITTED_CHECKBOX_TEXT)
    full_width = panels.text_width(context, panels.PANEL_INSET_PX + panels.ICON_PX)
    for panel in ("LOTUS_PT_scene25d_options", "LOTUS_PT_materials_options",
                  "LOTUS_PT_relight_options", "LOTUS_PT_view3d_options"):
        log = []
        root = _StrictLayout(log)
        getattr(bpy.types, panel).draw(SimpleNamespace(layout=root), context)
        texts = _checkbox_texts(log, bpy.types.PropertyGroup)
        assert texts, panel
        split = root.__dict__.get("use_property_split", False)
        for text in texts:
            assert measure(text) <= (room if split else full_width), (panel, split, text)
    assert "Automatic" in _checkbox_texts(_draw("LOTUS_PT_scene25d_options", context),
                                          bpy.types.PropertyGroup)
    # The file browser's side panel of Image Files...: the operator's own draw().
    operator = bpy.types.LOTUS_OT_predict_files
    rna = bpy.ops.lotus.predict_files.get_rna_type()
    log = []
    properties = SimpleNamespace(layout=_StrictLayout(log), bl_rna=rna,
                                 path_resolve=lambda path: rna.properties[path])
    operator.draw(properties, context)
    drawn = {args[1]: kw.get("text", rna.properties[args[1]].name)
             for name, args, kw, _e in log if name == "prop"}
    assert set(drawn) == {"task", "tiled", "seamless"}
    assert all(measure(drawn[key]) <= room for key in ("tiled", "seamless")), drawn


# Blender's sidebar at UI scale 1, from the GUI check's window (1920x1080, Blender's default
# Layout workspace, UI scale 1.0417; report.json and the *_sidebar.png crops, sizes divided by
# the scale and rounded up, so that the estimate is never kinder than the window):
SIDEBAR_1080P_PX = 862     # the sidebar's height: 898 px
UNIT_PX = 21               # a button, field or label line (UI_UNIT_Y, 20, and its border)
GAP_PX = 6                 # between the lines of a column that is not aligned
BOX_PAD_PX = 6             # a box's margin, above and below its lines
SEPARATOR_PX = 10
PANEL_HEADER_PX = 26       # a panel's or sub-panel's header, open or closed
PANEL_PAD_PX = 8           # above and below an open panel's lines
# The Lotus panel with a photo in all three builders, Relight's no-denoiser note, nothing
# running (12_relight_sidebar.png): its bottom edge at 602 px, so 578 px at UI scale 1.
MEASURED_BUILDERS_PX = 578


def layout_height(layout) -> float:
    """The height in pixels (UI scale 1) of what a panel drew into a _StrictLayout."""
    if isinstance(layout, str):
        return {"separator": SEPARATOR_PX, "separator_spacer": 0}.get(layout, UNIT_PX)
    heights = [layout_height(child) for child in layout.children]
    if layout.kind in ("row", "split"):
        height = max(heights, default=0)
    else:
        gap = 0 if layout.align else GAP_PX
        height = sum(heights) + gap * max(0, len(heights) - 1)
    return height + (2 * BOX_PAD_PX if layout.kind == "box" else 0)


def lotus_panels():
    """The registered Lotus panel classes, in registration order."""
    import bpy
    return [cls for cls in bpy.types.Panel.__subclasses__()
            if getattr(cls, "bl_idname", "").startswith("LOTUS_PT_") and cls.is_registered]


def panel_height(name, context) -> float:
    """A panel as the sidebar shows it by default: its header, and when it is open (no
    DEFAULT_CLOSED) its lines and its sub-panels (Blender draws them inside it)."""
    import bpy
    panel = getattr(bpy.types, name)
    if hasattr(panel, "poll") and not panel.poll(context):
        return 0
    if 'DEFAULT_CLOSED' in getattr(panel, "bl_options", set()):
        return PANEL_HEADER_PX
    root = _StrictLayout([])
    panel.draw(SimpleNamespace(layout=root), context)
    children = [cls.bl_idname for cls in lotus_panels()
                if getattr(cls, "bl_parent_id", "") == name]
    return (PANEL_HEADER_PX + 2 * PANEL_PAD_PX + layout_height(root)
            + sum(panel_height(child, context) for child in children))


def test_builders_fit_one_1080p_sidebar(lotus, fresh_data, monkeypatch, tmp_path):
    """The Lotus tab with the three builders ready (a photo in each; Relight's no-denoiser note)
    is shorter than the sidebar of a 1920x1080 window at the default UI scale, also while a run
    shows its progress: their buttons are reachable without scrolling (settings are in closed
    Options sub-panels). The estimate, from the panels' drawn lines, is checked against the
    real window's measure of the same state, so that it is not kinder than Blender."""
    import bpy
    panels = lotus.panels
    context = _sidebar_context()
    photo = bpy.data.images.new("fit_photo", 4, 4)
    monkeypatch.setattr(panels.compat, "cycles_can_denoise", lambda scene: False)
    for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
        getattr(bpy.context.scene, name).photo = photo
    manager = lotus.job_queue.manager
    try:
        # No maps yet: each builder says what to predict first, in lines of their own.
        hints = panel_height("LOTUS_PT_view3d", context)
        assert hints <= SIDEBAR_1080P_PX, hints
        # The photo's depth and normal maps made: the state the window was measured in.
        for kind in ("disparity", "normal"):
            result = bpy.data.images.new(f"fit_photo_{kind}", 4, 4)
            result["lotus_kind"], result["lotus_source"] = kind, photo.name
        ready = panel_height("LOTUS_PT_view3d", context)
        assert ready < hints
        # Never kinder than the window, and not so cautious that it could not fail.
        assert MEASURED_BUILDERS_PX <= ready < MEASURED_BUILDERS_PX + 2 * UNIT_PX, ready
        # A run in progress adds its box: still no scrolling.
        manager.current = _fake_job(lotus, tmp_path, state=lotus.job_queue.RUNNING, fraction=0.5,
                                    stage="image 1/4: predicting")
        running = panel_height("LOTUS_PT_view3d", context)
        assert ready < running <= SIDEBAR_1080P_PX, running
        # The Image Editor's tab (no builders) is shorter still.
        assert panel_height("LOTUS_PT_image_editor", _sidebar_context('IMAGE_EDITOR')) < ready
    finally:
        manager.current = None
        for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
            getattr(bpy.context.scene, name).photo = None
    # The settings stay in closed sub-panels; the builders stay open.
    for name in ("LOTUS_PT_scene25d", "LOTUS_PT_materials", "LOTUS_PT_relight"):
        assert 'DEFAULT_CLOSED' not in getattr(bpy.types, name).bl_options, name
        assert 'DEFAULT_CLOSED' in getattr(bpy.types, name + "_options").bl_options, name


def test_the_strict_layout_catches_a_misspelt_name(lotus, fresh_data):
    """What the panel tests rely on: a panel that misspells an operator, an operator's property,
    an enum value or a property it draws fails its draw, as it would in Blender."""
    import bpy
    layout = _StrictLayout([])
    button = layout.operator("lotus.predict_image", text="Photo")
    button.image = "photo.png"                       # a real property: fine
    with pytest.raises(AttributeError, match="imgae"):
        button.imgae = "photo.png"
    with pytest.raises(TypeError, match="DEPTHS"):
        button.task = 'DEPTHS'
    with pytest.raises(TypeError):
        button.tiled = "yes"
    with pytest.raises(KeyError):
        layout.operator("lotus.predict_imag")
    with pytest.raises(ValueError):
        layout.prop(bpy.context.scene.lotus_predict, "tiledd")

    class Misspelt:
        def draw(self, context):
            self.layout.operator("lotus.build_photo_scene").phot = "photo.png"
    with pytest.raises(AttributeError, match="phot"):
        Misspelt.draw(SimpleNamespace(layout=_StrictLayout([])), _sidebar_context())


def test_every_panel_and_predict_dialog_draws_with_real_names(lotus, fresh_data):
    """Every Lotus panel that shows (the builders with a photo), and the predict operators' own
    draw() (Image Files' browser side panel, the redo panel), through the strict layout: every
    operator button sets only its operator's properties. The sidebar passes the image only."""
    import bpy
    photo = bpy.data.images.new("strict_photo", 4, 4)
    for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
        getattr(bpy.context.scene, name).photo = photo
    drawn = set()
    try:
        for space in ('VIEW_3D', 'IMAGE_EDITOR'):
            context = _sidebar_context(space)
            for panel in lotus_panels():
                if panel.bl_space_type != space:
                    continue
                log = _draw(panel.bl_idname, context)
                if log is not None:
                    drawn.add(panel.bl_idname)
                    assert log, panel.bl_idname
            # The source buttons pass the image (or nothing), never the options.
            sets = [(entry[1], entry[2]) for entry in _draw(
                "LOTUS_PT_view3d" if space == 'VIEW_3D' else "LOTUS_PT_image_editor", context)
                if entry[0] == "set"]
            assert {name for name, _value in sets} <= {"image"}, sets
    finally:
        for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
            getattr(bpy.context.scene, name).photo = None
    assert {cls.bl_idname for cls in lotus_panels()} - drawn == {"LOTUS_PT_scene25d_live"}
    # The operators' own draw(): the redo panel shows the options that apply to the image.
    for image_source, expected in (('GENERATED', {"task", "tiled", "seamless"}),
                                   ('SEQUENCE', {"task", "tiled", "seamless", "frame_start",
                                                 "frame_end", "stabilize"})):
        photo.source = image_source
        log = _draw_operator(lotus, "lotus.predict_image", image=photo.name)
        assert {args[1] for name, args, _kw, _e in log if name == "prop"} == expected
    log = _draw_operator(lotus, "lotus.predict_files")
    assert {args[1] for name, args, _kw, _e in log if name == "prop"} == \
        {"task", "tiled", "seamless"}


def _draw_operator(lotus, idname, **values):
    """An operator's draw() on a stand-in holding its properties' defaults (and ``values``),
    whose layout.prop() resolves them against the operator's real properties."""
    import bpy
    rna = operator_rna(idname)
    module, _, name = idname.partition(".")
    operator = getattr(bpy.types, f"{module.upper()}_OT_{name}")
    log = []
    state = {key: prop.default for key, prop in rna.properties.items()
             if key != "rna_type" and hasattr(prop, "default")}
    state.update(values)
    stand_in = SimpleNamespace(**state, layout=_StrictLayout(log), bl_rna=rna,
                               path_resolve=lambda path: rna.properties[path])
    stand_in.images = lambda context: operator.images(stand_in, context)
    operator.draw(stand_in, _sidebar_context())
    return log


def _multi_image_gather(lotus, count):
    image = new_image("panel_src", gradient(96, 72))

    def gather(context, job_dir, resolution):
        return [lotus.inputs.prepare_image(image, job_dir, resolution, i, name=f"panel{i}")
                for i in range(count)], []
    return gather


def test_depth_and_normals_is_one_bar_and_a_new_run_clears_the_last_error(lotus):
    import bpy
    manager = lotus.job_queue.manager
    manager.last_error = "Depth old: the previous run failed"
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'BOTH', _multi_image_gather(lotus, 3), reports)
    assert [(job.run_part, job.run_parts) for job in built] == [(0, 2), (1, 2)]
    assert built[0].run_id == built[1].run_id and built[0].run_label.startswith("Depth & Normals")
    for job in built:
        manager.submit(job)
    assert manager.current is built[0]
    assert manager.last_error == ""            # cleared as the run starts, not when it succeeds
    assert manager.waiting_runs() == 0         # the normal job is part of this run
    seen = []

    def record(_runner):
        job = manager.current
        if job is not None:
            seen.append((job.task, job.run_fraction, job.status_text()))
    assert drive(lotus.job_runner.JobRunner(built, reports), record) == {'FINISHED'}
    fractions = [fraction for _task, fraction, _text in seen]
    assert fractions == sorted(fractions), fractions
    assert max(f for task, f, _ in seen if task == "depth") <= 0.5
    assert min(f for task, f, _ in seen if task == "normal") >= 0.5
    # Halfway through its own part, the normal map is three quarters of the run (polled progress
    # may skip past the middle of a part on a fast machine, so this is checked on the job).
    normal_job = built[1]
    normal_job.progress = 0.5
    assert normal_job.run_fraction == 0.75 and built[0].run_fraction == 0.5
    assert all(text.startswith("Depth & Normals panel0 (+2): ") and text.endswith("%")
               for _task, _f, text in seen)
    remove_images("panel")


def test_cancel_shows_cancelling_until_the_worker_stops(lotus):
    import bpy
    manager = lotus.job_queue.manager
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'BOTH', _multi_image_gather(lotus, 6), reports)
    for job in built:
        manager.submit(job)
    runner = lotus.job_runner.JobRunner(built, reports)
    started = time.monotonic()
    while built[0].state == lotus.job_queue.QUEUED or built[0].progress == 0.0:
        runner.handle('TIMER')
        assert time.monotonic() - started < 120, "no progress from the worker"
        time.sleep(0.02)
    assert runner.handle('ESC') == {'RUNNING_MODAL'}
    job = built[0]
    assert job.cancelling and job.status_text().endswith(": cancelling...")
    assert built[1].state == lotus.job_queue.CANCELLED   # the queued part goes at once
    log = _draw("LOTUS_PT_view3d", _sidebar_context())
    bars = [kw for name, _a, kw, _e in log if name == "progress"]
    assert bars[0]["text"] == "Cancelling..."
    cancel = [enabled for name, args, _kw, enabled in log
              if name == "operator" and args[0] == "lotus.cancel_jobs"]
    assert cancel == [False]
    stages = []
    assert drive(runner, lambda _r: stages.append(job.stage)) == {'CANCELLED'}
    assert set(stages[:-1]) <= {"cancelling"}   # progress still arriving does not hide it
    assert job.state == lotus.job_queue.CANCELLED and not job.cancelling
    remove_images("panel")


def _containers_before_tools(log):
    """The layout calls that make lines, up to the tools row (Release, Log, Models)."""
    release = next(i for i, entry in enumerate(log)
                   if entry[0] == "operator" and entry[1][0] == "lotus.release_model")
    return [entry[0] for entry in log[:release] if entry[0] in ("row", "column", "box", "split")]


def test_render_result_and_viewer_buttons_only_with_the_artists_pixels(lotus, fresh_data):
    """Render Result and Compositor Viewer show only after the artist rendered or composited in
    this session (never for the add-on's own renders, nor for a Viewer image a file brought),
    in a row that is always there: the buttons below never move."""
    import bpy
    panels = lotus.panels
    context = _sidebar_context()
    panels._file_loaded()
    assert not panels.has_pixels(None)
    viewer = SimpleNamespace(type='COMPOSITING', has_data=True)  # Blender 5.2's black 256x256
    assert not panels.has_pixels(viewer)
    empty = _draw("LOTUS_PT_view3d", context)
    assert "Render Result" not in _texts(empty, "operator")
    (hint,) = [text for text in _texts(empty, "label") if text and "F12" in text]
    measure = panels.text_measure(context)
    assert measure(hint) <= panels.text_width(context, panels.PANEL_INSET_PX + panels.ICON_PX)
    scene = bpy.context.scene
    engine, size = scene.render.engine, (scene.render.resolution_x, scene.render.resolution_y)
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y = 16, 12
    try:
        with panels.own_renders():           # Preview Relight's bands, for example
            bpy.ops.render.render()
        assert "Render Result" not in _texts(_draw("LOTUS_PT_view3d", context), "operator")
        bpy.ops.render.render()
        result = bpy.data.images["Render Result"]
        assert not result.has_data           # why has_data alone cannot tell
        rendered = _draw("LOTUS_PT_view3d", context)
        assert "Render Result" in _texts(rendered, "operator")
        assert _containers_before_tools(rendered) == _containers_before_tools(empty)
        # A temporary scene of the add-on renders into Render Result: the artist's render is gone.
        temporary = bpy.data.scenes.new(panels.TEMPORARY_SCENE_PREFIX + "test")
        try:
            panels._render_finished(temporary)
        finally:
            bpy.data.scenes.remove(temporary)
        assert "Render Result" not in _texts(_draw("LOTUS_PT_view3d", context), "operator")
        bpy.ops.render.render()
        panels._file_loaded()                # what load_post runs: a loaded file has no render
        assert "Render Result" not in _texts(_draw("LOTUS_PT_view3d", context), "operator")
    finally:
        scene.render.engine = engine
        scene.render.resolution_x, scene.render.resolution_y = size
    # The Viewer counts once the artist's scene composites into a Viewer node.
    panels._composited(scene)
    assert not panels.has_pixels(viewer)    # no Viewer node in this scene's compositor
    viewer_scene = SimpleNamespace(name="Scene", render=SimpleNamespace(use_compositing=True))
    real_trees = lotus.panels.compat.compositor_trees
    lotus.panels.compat.compositor_trees = lambda _scene: [SimpleNamespace(
        nodes=[SimpleNamespace(type='VIEWER')])]
    try:
        panels._composited(viewer_scene)
    finally:
        lotus.panels.compat.compositor_trees = real_trees
    assert panels.has_pixels(viewer)
    assert not panels.has_pixels(SimpleNamespace(type='COMPOSITING', has_data=False))
    panels._file_loaded()
    assert not panels.has_pixels(viewer)
    assert panels._render_finished in bpy.app.handlers.render_complete
    assert panels._composited in bpy.app.handlers.composite_post
    assert panels._file_loaded in bpy.app.handlers.load_post


def test_compositor_trees_finds_the_scenes_viewer(lotus, fresh_data):
    """compat.compositor_trees on this Blender: effects (5.3), the node group (5.0-5.2) or the
    scene's tree (4.x), without touching an API this Blender deprecates."""
    import warnings
    import bpy
    scene = bpy.data.scenes.new("compositor_trees_test")
    group = None
    try:
        assert lotus.panels.compat.compositor_trees(scene) == []
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            tree, group, _socket = lotus.panels.compat.new_compositor(scene, "compositor_trees_test")
            tree.nodes.new("CompositorNodeViewer")
            trees = lotus.panels.compat.compositor_trees(scene)
        assert [t.name for t in trees] == [tree.name]
        assert lotus.panels._has_viewer_node(scene)
    finally:
        bpy.data.scenes.remove(scene)
        if group is not None:
            bpy.data.node_groups.remove(group)


def test_status_bar_keeps_its_percentage(lotus, tmp_path):
    """The status bar's bar is short: it says "Lotus 58%" (the details are in the status text)."""
    manager = lotus.job_queue.manager
    job = _fake_job(lotus, tmp_path, state=lotus.job_queue.RUNNING, stage="image 1/4: decoding",
                    fraction=0.16, run_parts=2, run_part=1)
    manager.current = job
    try:
        log = []
        lotus.panels.draw_status_bar(SimpleNamespace(layout=_StrictLayout(log)), _sidebar_context())
        job.cancel_sent_at = 1.0
        lotus.panels.draw_status_bar(SimpleNamespace(layout=_StrictLayout(log)), _sidebar_context())
    finally:
        manager.current = None
    assert _texts(log, "progress") == ["Lotus 58%", "Lotus: Cancelling..."]
    assert job.status_text() == "Depth photo: cancelling..."


def test_relight_panel_says_when_this_blender_cannot_denoise(lotus, fresh_data, monkeypatch):
    """Distro builds without OpenImageDenoise (Debian's 4.3 and 5.2) render without denoising:
    the Relight panel says so, in lines that fit."""
    import bpy
    panels = lotus.panels
    context = _sidebar_context()
    photo = bpy.data.images.new("denoise_photo", 4, 4)
    bpy.context.scene.lotus_relight.photo = photo
    try:
        said = [t for t in _texts(_draw("LOTUS_PT_relight", context), "label") if "denois" in t]
        assert not said  # PyPI bpy has OpenImageDenoise
        monkeypatch.setattr(panels.compat, "cycles_can_denoise", lambda scene: False)
        lines = _texts(_draw("LOTUS_PT_relight", context), "label")
        said = " ".join(line for line in lines if line)
        assert "This Blender has no denoiser: renders are not denoised" in said, lines
        width = panels.text_width(context, panels.PANEL_INSET_PX + panels.ICON_PX)
        assert all(panels.text_measure(context)(line) <= width for line in lines if line)
    finally:
        bpy.context.scene.lotus_relight.photo = None


def test_online_access_note_only_when_a_model_is_downloaded(lotus):
    """With only Local Folder models, the preferences say nothing about online access."""
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    assert not bpy.app.online_access
    saved = prefs.depth_model, prefs.normal_model

    def drawn():
        log = []
        type(prefs).draw(SimpleNamespace(layout=_StrictLayout(log),
                                         depth_model=prefs.depth_model,
                                         normal_model=prefs.normal_model,
                                         downloads_models=lambda: type(prefs).downloads_models(prefs),
                                         path_resolve=prefs.path_resolve), bpy.context)
        return " ".join(text or "" for text in _texts(log, "label"))
    try:
        prefs.depth_model, prefs.normal_model = 'LOCAL', 'LOCAL'
        assert "Online access is off" not in drawn()
        prefs.depth_model = "jingheya/lotus-depth-g-v2-1-disparity"
        assert "Online access is off" in drawn()
    finally:
        prefs.depth_model, prefs.normal_model = saved


def test_photo_pickers_are_labelled_and_list_only_photos(lotus, fresh_data, tmp_path):
    """The 2.5D builder's picker says "Photo:" like the others, and none offers Lotus results."""
    import bpy
    from PIL import Image
    Image.new("RGB", (4, 4)).save(tmp_path / "picker_photo.png")
    photo = bpy.data.images.load(str(tmp_path / "picker_photo.png"))
    result = bpy.data.images.new("picker_photo_depth", 4, 4)
    result["lotus_kind"] = "disparity"
    log = _draw("LOTUS_PT_scene25d", _sidebar_context())
    # A property field without text of its own: Blender labels it "Photo:", as in the others.
    (photo_field,) = [kw for name, args, kw, _e in log if name == "prop" and args[1] == "photo"]
    assert "text" not in photo_field
    assert type(bpy.context.scene.lotus_scene25d).bl_rna.properties["photo"].name == "Photo"
    for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
        settings = getattr(bpy.context.scene, name)
        # The picker lists the images the property's poll accepts.
        poll = type(settings).__annotations__["photo"].keywords.get("poll")
        assert poll is not None, name
        assert poll(settings, photo) and not poll(settings, result), name

