/*
 * stvsr VapourSynth shim: registers the `stvsr` namespace and forwards
 * core.stvsr.Upsample(clip, ...) to the Python implementation in vs_plugin.
 *
 * Python cannot register plugin functions, so this small plugin does it. It does not link
 * libpython: the few CPython calls it needs are looked up at run time with dlsym, so in a
 * host without Python the plugin still loads and Upsample reports a clear error.
 *
 * Flow of one call: take the GIL, import vs_plugin.bridge and call register(), which calls
 * core.stvsr.Register(func=<python callable>) on this thread; Register stores the function
 * in a thread-local slot; release the GIL and call that function with our arguments
 * (VapourSynth converts the clip and keyword arguments to Python and back).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "VapourSynth4.h"

typedef void *PyObj;
typedef int (*IntVoid)(void);
typedef int (*GilEnsure)(void);
typedef void (*GilRelease)(int);
typedef PyObj (*ImportModule)(const char *);
typedef PyObj (*CallMethod)(PyObj, const char *, const char *, ...);
typedef void (*DecRef)(PyObj);
typedef void (*ErrFetch)(PyObj *, PyObj *, PyObj *);
typedef PyObj (*ObjStr)(PyObj);
typedef const char *(*AsUTF8)(PyObj);

static _Thread_local VSFunction *pending = NULL;

static void *sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

/* core.stvsr.Register(func): called back from Python on the creating thread. */
static void VS_CC registerCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    (void)out; (void)userData; (void)core;
    if (pending)
        vsapi->freeFunction(pending);
    pending = vsapi->mapGetFunction(in, "func", 0, NULL);
}

/* Import vs_plugin.bridge and call register(); on failure write the Python error to msg. */
static int loadImplementation(char *msg, size_t size) {
    IntVoid isInitialized = (IntVoid)sym("Py_IsInitialized");
    GilEnsure ensure = (GilEnsure)sym("PyGILState_Ensure");
    GilRelease release = (GilRelease)sym("PyGILState_Release");
    ImportModule import = (ImportModule)sym("PyImport_ImportModule");
    CallMethod callMethod = (CallMethod)sym("PyObject_CallMethod");
    DecRef decref = (DecRef)sym("Py_DecRef");
    ErrFetch fetch = (ErrFetch)sym("PyErr_Fetch");
    ObjStr str = (ObjStr)sym("PyObject_Str");
    AsUTF8 utf8 = (AsUTF8)sym("PyUnicode_AsUTF8");
    if (!isInitialized || !ensure || !release || !import || !callMethod || !decref || !fetch || !str || !utf8
        || !isInitialized()) {
        snprintf(msg, size, "stvsr.Upsample: this host has no Python interpreter; the filter is written in "
                 "Python. Run the script with vspipe, VapourSynth's Python module or a Python-based editor");
        return 0;
    }
    int gil = ensure();
    int ok = 0;
    PyObj module = import("vs_plugin.bridge");
    PyObj result = module ? callMethod(module, "register", NULL) : NULL;
    if (result) {
        ok = 1;
        decref(result);
    } else {
        PyObj type = NULL, value = NULL, tb = NULL;
        fetch(&type, &value, &tb);
        PyObj text = value ? str(value) : NULL;
        const char *s = text ? utf8(text) : NULL;
        snprintf(msg, size, "stvsr.Upsample: could not load the Python implementation (vs_plugin.bridge): %s. "
                 "Install the stvsr package into the Python that VapourSynth uses (pip install stvsr[vapoursynth])",
                 s ? s : "unknown error");
        if (text) decref(text);
        if (type) decref(type);
        if (value) decref(value);
        if (tb) decref(tb);
    }
    if (module) decref(module);
    release(gil);
    return ok;
}

static void VS_CC upsampleCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    (void)userData; (void)core;
    char msg[2048];
    if (!loadImplementation(msg, sizeof msg)) {
        vsapi->mapSetError(out, msg);
        return;
    }
    VSFunction *impl = pending;
    pending = NULL;
    if (!impl) {
        vsapi->mapSetError(out, "stvsr.Upsample: vs_plugin.bridge.register() did not hand over the implementation");
        return;
    }
    vsapi->callFunction(impl, in, out);
    vsapi->freeFunction(impl);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin("io.github.stvsr", "stvsr", "Spatiotemporal video super-resolution (Dual-Stream Fusion)",
                         VS_MAKE_VERSION(1, 0), VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction("Upsample", "clip:vnode;any", "clip:vnode;", upsampleCreate, NULL, plugin);
    vspapi->registerFunction("Register", "func:func;", "", registerCreate, NULL, plugin);
}
