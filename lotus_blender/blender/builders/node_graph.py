"""A small wiring kit for node trees built from Python: one call per node or math operation,
constants or sockets as inputs, images read nearest-pixel at one frame. The 2.5D mesh's geometry
nodes group (geonodes.py) is written with it."""

import bpy


class NodeGraph:
    """Small helpers to add nodes and wire math without a page of boilerplate per operation."""

    def __init__(self, tree):
        self.tree = tree
        self.x = 0
        self.frame = None   # the images' frame (a socket), set once the group input exists

    def node(self, bl_idname, inputs=(), **props):
        node = self.tree.nodes.new(bl_idname)
        for key, value in props.items():
            setattr(node, key, value)
        for key, value in dict(inputs).items():
            socket = node.inputs[key]
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            else:
                socket.default_value = value
        node.location = (self.x, 0)
        self.x += 180
        return node

    def math(self, operation, a, b=None):
        inputs = {0: a} if b is None else {0: a, 1: b}
        return self.node("ShaderNodeMath", inputs, operation=operation).outputs[0]

    def add(self, a, b):
        return self.math('ADD', a, b)

    def sub(self, a, b):
        return self.math('SUBTRACT', a, b)

    def mul(self, a, b):
        return self.math('MULTIPLY', a, b)

    def div(self, a, b):
        return self.math('DIVIDE', a, b)

    def vector(self, operation, a, b=None, c=None):
        inputs = {index: value for index, value in enumerate((a, b, c)) if value is not None}
        return self.node("ShaderNodeVectorMath", inputs, operation=operation).outputs[0]

    def clamp(self, value, low, high):
        return self.node("ShaderNodeClamp", {"Value": value, "Min": low, "Max": high}).outputs[0]

    def switch(self, input_type, condition, if_false, if_true):
        node = self.node("GeometryNodeSwitch", {"Switch": condition, "False": if_false, "True": if_true},
                         input_type=input_type)
        return node.outputs[0]

    def combine(self, x, y, z):
        return self.node("ShaderNodeCombineXYZ", {"X": x, "Y": y, "Z": z}).outputs[0]

    def texture(self, image, vector):
        """The image (at the frame the scene shows) sampled at vector, nearest pixel."""
        return self.node("GeometryNodeImageTexture", {"Image": image, "Vector": vector, "Frame": self.frame},
                         interpolation='Closest', extension='EXTEND')

    def image_info(self, image):
        """Width, height... of the image at the scene's frame (a sequence's frame 0 has no file)."""
        return self.node("GeometryNodeImageInfo", {"Image": image, "Frame": self.frame})

    def sample(self, image, vector, channels=("Red",)):
        texture = self.texture(image, vector)
        separate = self.node("FunctionNodeSeparateColor", {"Color": texture.outputs["Color"]})
        return [separate.outputs[channel] for channel in channels]

    def sample_red(self, image, vector):
        return self.sample(image, vector)[0]

    def boolean(self, operation, a, b=None):
        inputs = {0: a} if b is None else {0: a, 1: b}
        return self.node("FunctionNodeBooleanMath", inputs, operation=operation).outputs[0]

    def on_domain(self, value, domain):
        """A float field evaluated on `domain`, then read in the context's domain (Blender averages:
    edges -> face is the mean over the face's edges)."""
        node = self.node("GeometryNodeFieldOnDomain", {0: value}, domain=domain, data_type='FLOAT')
        return node.outputs[0]
