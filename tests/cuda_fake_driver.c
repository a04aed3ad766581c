// A stand-in for libcuda.so.1, libcublasLt.so and libnccl.so.2 used by tests/cuda_fake_driver_test.ts on
// machines without a GPU. "Device" memory is host memory, copies and memsets are real,
// kernels do not run: each launch is checked instead (the packed argument buffer has the
// exact size of the kernel's PTX parameter list, every pointer argument lies inside a live
// allocation, grid/block/shared sizes are within limits). cublasLtMatmul really multiplies
// (column-major, transposes, strided batches, f32/bf16), so the backend's row-major to
// column-major GEMM mapping is checked against the CPU backend.
//
// Streams and events run eagerly (every call completes before it returns), which is one legal
// schedule; the ordering the real driver guarantees is checked instead: a vector-clock race
// detector (see "stream ordering" below) reports as a violation any access to an allocation
// (device memory, or pinned host memory from cuMemAllocHost) that another stream made without
// an event, a stream synchronization or the legacy stream's implicit ordering between them.
//
// Build: gcc -shared -fPIC -O2 -o libfakecuda.so tests/cuda_fake_driver.c
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int CUresult;

#ifdef TUNE_EMU
// Runs the kernel on the CPU (tests/cuda_emulator.cpp); 0 when it ran.
int emu_run(const char* name, const unsigned char* args, unsigned gx, unsigned gy, unsigned gz,
            unsigned bx, unsigned by, unsigned bz, unsigned shared);
#endif

// ---- bookkeeping ------------------------------------------------------------------------

#define MAX_ALLOCS 65536
// Agents of the race detector: 0 the host, 1 the legacy stream, 2.. the created streams.
#define MAX_AGENTS 32
static struct {
  uint64_t start, end;
  int host;                  // 1: pinned host memory (cuMemAllocHost), never a kernel argument
  int w;                     // agent of the last write, -1 for none
  uint32_t cw;               // its clock
  uint32_t rd[MAX_AGENTS];   // clock of each agent's last read since that write (0: none)
} allocs[MAX_ALLOCS];
static int n_allocs = 0;
static char violations[8192];
static int n_violations = 0;
static long launches = 0;

static void violation(const char* fmt, ...) {
  n_violations++;
  size_t used = strlen(violations);
  if (used + 200 < sizeof(violations)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(violations + used, sizeof(violations) - used - 2, fmt, ap);
    va_end(ap);
    strcat(violations, "\n");
  }
}

static int inside_alloc(uint64_t p) {
  for (int i = 0; i < n_allocs; i++) {
    if (!allocs[i].host && p >= allocs[i].start && p < allocs[i].end) return 1;
  }
  return 0;
}

static int new_alloc(uint64_t start, size_t n, int host) {
  if (n_allocs == MAX_ALLOCS) return 0;
  memset(&allocs[n_allocs], 0, sizeof(allocs[0]));
  allocs[n_allocs].start = start;
  allocs[n_allocs].end = start + n;
  allocs[n_allocs].host = host;
  allocs[n_allocs].w = -1;
  n_allocs++;
  return 1;
}

static int drop_alloc(uint64_t p, int host) {
  for (int i = 0; i < n_allocs; i++) {
    if (allocs[i].start == p && allocs[i].host == host) {
      allocs[i] = allocs[--n_allocs];
      return 1;
    }
  }
  return 0;
}

// ---- stream ordering: a vector-clock race detector ---------------------------------------
// vc[a][b] is the last clock of agent b whose work agent a is ordered after. Work issued by
// the host to a stream is ordered after what the host has waited for; the legacy stream is
// ordered after the blocking streams' earlier work and they after its (cuStreamCreate flags
// 0); a CU_STREAM_NON_BLOCKING (1) stream only through events and synchronization.

static uint32_t vc[MAX_AGENTS][MAX_AGENTS];
static int agent_used[MAX_AGENTS] = {1, 1};
static int agent_blocking[MAX_AGENTS] = {0, 1};
static long races = 0;

typedef struct {
  int agent;
} FakeStream;
typedef struct {
  uint32_t vc[MAX_AGENTS];
  int recorded;
} FakeEvent;

static void merge(uint32_t* into, const uint32_t* from) {
  for (int i = 0; i < MAX_AGENTS; i++) if (from[i] > into[i]) into[i] = from[i];
}
static int agent_of(void* stream) { return stream ? ((FakeStream*)stream)->agent : 1; }

// Agent `a` starts one operation issued by the host now; returns a.
static int issue(int a) {
  merge(vc[a], vc[0]);
  if (a == 1) {
    for (int b = 2; b < MAX_AGENTS; b++) if (agent_used[b] && agent_blocking[b]) merge(vc[1], vc[b]);
  } else if (agent_blocking[a]) {
    merge(vc[a], vc[1]);
  }
  vc[a][a]++;
  return a;
}
// The host waits for everything agent `a` has been given.
static void host_waits(int a) { merge(vc[0], vc[a]); }

// Agent `a` reads or writes the allocation holding p (untracked memory is ignored).
static void access_mem(const char* call, uint64_t p, int a, int write) {
  for (int i = 0; i < n_allocs; i++) {
    if (p < allocs[i].start || p >= allocs[i].end) continue;
    int w = allocs[i].w;
    if (w >= 0 && w != a && allocs[i].cw > vc[a][w]) {
      races++;
      violation("%s: race: agent %d %s memory at %lx written by agent %d without ordering",
                call, a, write ? "writes" : "reads", (unsigned long)p, w);
    }
    if (write) {
      for (int b = 0; b < MAX_AGENTS; b++) {
        if (b != a && allocs[i].rd[b] > vc[a][b]) {
          races++;
          violation("%s: race: agent %d writes memory at %lx read by agent %d without ordering",
                    call, a, (unsigned long)p, b);
        }
      }
      memset(allocs[i].rd, 0, sizeof(allocs[i].rd));
      allocs[i].w = a;
      allocs[i].cw = vc[a][a];
    } else {
      allocs[i].rd[a] = vc[a][a];
    }
    return;
  }
}
long fake_races(void) { return races; }

// Test hooks.
long fake_launch_count(void) { return launches; }
int fake_violations(char* buf, int len) {
  snprintf(buf, len, "%s", violations);
  return n_violations;
}
void fake_reset(void) {
  violations[0] = 0;
  n_violations = 0;
  launches = 0;
  races = 0;
}

// ---- driver: device, context ---------------------------------------------------------

CUresult cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }
CUresult cuDriverGetVersion(int* v) { *v = 12040; return 0; }
CUresult cuDeviceGetCount(int* c) { *c = 1; return 0; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char* name, int len, int dev) {
  snprintf(name, len, "Fake GPU %d", dev);
  return 0;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = (size_t)80 << 30; return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 132 : attr == 97 ? 232448 : 0;
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) { *ctx = (void*)0x1000; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { return 0; }
CUresult cuCtxSetCurrent(void* ctx) { return ctx == (void*)0x1000 ? 0 : 201; }
CUresult cuCtxSynchronize(void) {
  for (int a = 1; a < MAX_AGENTS; a++) if (agent_used[a]) host_waits(a);
  return 0;
}

// ---- memory ----------------------------------------------------------------------------

CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { *f = (size_t)70 << 30; *t = (size_t)80 << 30; return 0; }
CUresult cuMemAlloc_v2(uint64_t* p, size_t n) {
  if (n == 0) return 1;
  void* m = aligned_alloc(256, (n + 255) / 256 * 256);
  if (!m) return 2;
  if (!new_alloc((uint64_t)m, n, 0)) { free(m); return 2; }
  *p = (uint64_t)m;
  return 0;
}
CUresult cuMemFree_v2(uint64_t p) {
  if (!drop_alloc(p, 0)) return 1;
  free((void*)p);
  return 0;
}
// Page-locked host memory: tracked by the race detector, refused as a kernel argument.
static long host_live = 0;
long fake_host_bytes_live(void) { return host_live; }
CUresult cuMemAllocHost_v2(void** p, size_t n) {
  if (n == 0) return 1;
  void* m = aligned_alloc(256, (n + 255) / 256 * 256);
  if (!m) return 2;
  if (!new_alloc((uint64_t)m, n, 1)) { free(m); return 2; }
  host_live += (long)n;
  *p = m;
  return 0;
}
CUresult cuMemFreeHost(void* p) {
  for (int i = 0; i < n_allocs; i++) {
    if (allocs[i].start == (uint64_t)p && allocs[i].host) host_live -= (long)(allocs[i].end - allocs[i].start);
  }
  if (!drop_alloc((uint64_t)p, 1)) return 1;
  free(p);
  return 0;
}
static CUresult check_range(const char* call, uint64_t p, size_t n) {
  if (n == 0) return 0;
  if (!inside_alloc(p) || !inside_alloc(p + n - 1)) {
    violation("%s: range outside allocations (%ld bytes at %lx)", call, (long)n, (unsigned long)p);
    return 1;
  }
  return 0;
}
// The synchronous calls run on the legacy stream and return when it is done.
static CUresult htod(const char* call, uint64_t d, const void* s, size_t n, int a) {
  if (check_range(call, d, n)) return 1;
  access_mem(call, (uint64_t)s, a, 0);
  access_mem(call, d, a, 1);
  memcpy((void*)d, s, n);
  return 0;
}
static CUresult dtoh(const char* call, void* d, uint64_t s, size_t n, int a) {
  if (check_range(call, s, n)) return 1;
  access_mem(call, s, a, 0);
  access_mem(call, (uint64_t)d, a, 1);
  memcpy(d, (void*)s, n);
  return 0;
}
CUresult cuMemcpyHtoD_v2(uint64_t d, const void* s, size_t n) {
  CUresult r = htod("cuMemcpyHtoD", d, s, n, issue(1));
  host_waits(1);
  return r;
}
CUresult cuMemcpyDtoH_v2(void* d, uint64_t s, size_t n) {
  CUresult r = dtoh("cuMemcpyDtoH", d, s, n, issue(1));
  host_waits(1);
  return r;
}
CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void* s, size_t n, void* st) {
  return htod("cuMemcpyHtoDAsync", d, s, n, issue(agent_of(st)));
}
CUresult cuMemcpyDtoHAsync_v2(void* d, uint64_t s, size_t n, void* st) {
  return dtoh("cuMemcpyDtoHAsync", d, s, n, issue(agent_of(st)));
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s, size_t n, void* st) {
  if (check_range("cuMemcpyDtoD dst", d, n) || check_range("cuMemcpyDtoD src", s, n)) return 1;
  int a = issue(agent_of(st));
  access_mem("cuMemcpyDtoD", s, a, 0);
  access_mem("cuMemcpyDtoD", d, a, 1);
  memmove((void*)d, (void*)s, n);
  return 0;
}
static CUresult memset8(uint64_t d, unsigned char v, size_t n, int a) {
  if (check_range("cuMemsetD8", d, n)) return 1;
  access_mem("cuMemsetD8", d, a, 1);
  memset((void*)d, v, n);
  return 0;
}
static CUresult memset32(uint64_t d, unsigned v, size_t n, int a) {
  if (check_range("cuMemsetD32", d, n * 4)) return 1;
  access_mem("cuMemsetD32", d, a, 1);
  for (size_t i = 0; i < n; i++) ((uint32_t*)d)[i] = v;
  return 0;
}
CUresult cuMemsetD8_v2(uint64_t d, unsigned char v, size_t n) { return memset8(d, v, n, issue(1)); }
CUresult cuMemsetD32_v2(uint64_t d, unsigned v, size_t n) { return memset32(d, v, n, issue(1)); }
CUresult cuMemsetD8Async(uint64_t d, unsigned char v, size_t n, void* st) { return memset8(d, v, n, issue(agent_of(st))); }
CUresult cuMemsetD32Async(uint64_t d, unsigned v, size_t n, void* st) { return memset32(d, v, n, issue(agent_of(st))); }

// ---- streams, events -------------------------------------------------------------------

CUresult cuStreamCreate(void** s, unsigned flags) {
  if (flags > 1) return 1;
  int a = 2;
  while (a < MAX_AGENTS && agent_used[a]) a++;
  if (a == MAX_AGENTS) return 2;
  // a reused agent keeps its clocks, so what others know of it stays true
  agent_used[a] = 1;
  agent_blocking[a] = flags == 0;
  FakeStream* fs = (FakeStream*)malloc(sizeof(FakeStream));
  fs->agent = a;
  *s = fs;
  return 0;
}
CUresult cuStreamDestroy_v2(void* s) {
  if (!s) return 1;
  host_waits(agent_of(s));
  agent_used[agent_of(s)] = 0;
  free(s);
  return 0;
}
CUresult cuStreamSynchronize(void* s) {
  host_waits(agent_of(s));
  return 0;
}
// Counters for tests/cuda_profile_test.ts (events made, recorded, live).
static long event_creates = 0, event_records = 0, events_live = 0, stream_waits = 0;
long fake_event_creates(void) { return event_creates; }
long fake_event_records(void) { return event_records; }
long fake_events_live(void) { return events_live; }
long fake_stream_waits(void) { return stream_waits; }
CUresult cuEventCreate(void** e, unsigned flags) {
  *e = calloc(1, sizeof(FakeEvent));
  event_creates++;
  events_live++;
  return 0;
}
CUresult cuEventDestroy_v2(void* e) { free(e); events_live--; return 0; }
// The event captures what the stream has been given so far.
CUresult cuEventRecord(void* e, void* s) {
  int a = issue(agent_of(s));
  memcpy(((FakeEvent*)e)->vc, vc[a], sizeof(vc[a]));
  ((FakeEvent*)e)->recorded = 1;
  event_records++;
  return 0;
}
CUresult cuEventSynchronize(void* e) {
  merge(vc[0], ((FakeEvent*)e)->vc);
  return 0;
}
// Work given to the stream from now on is ordered after the event's last record (flags 0).
CUresult cuStreamWaitEvent(void* s, void* e, unsigned flags) {
  if (flags != 0 || !e) return 1;
  stream_waits++;
  merge(vc[agent_of(s)], ((FakeEvent*)e)->vc);
  return 0;
}
CUresult cuEventElapsedTime(float* ms, void* a, void* b) { *ms = 1.5f; return 0; }

// ---- modules, kernels ------------------------------------------------------------------

typedef struct {
  char* text;
} Module;
typedef struct {
  char name[128];
  char kinds[64];  // p / i / f per parameter
  int param_bytes;
} Function;

CUresult cuModuleLoadDataEx(void** mod, const void* image, unsigned n, int* opts, void** vals) {
  const char* text = (const char*)image;
  char* errlog = NULL;
  size_t errsize = 0;
  for (unsigned i = 0; i < n; i++) {
    if (opts[i] == 5) errlog = (char*)vals[i];
    if (opts[i] == 6) errsize = (size_t)vals[i];
  }
  if (strstr(text, ".version") == NULL || strstr(text, "FAKE_JIT_ERROR") != NULL) {
    if (errlog && errsize > 0) snprintf(errlog, errsize, "ptxas fatal   : fake syntax error in line 1");
    return 218;  // CUDA_ERROR_INVALID_PTX
  }
  Module* m = (Module*)malloc(sizeof(Module));
  m->text = strdup(text);
  *mod = m;
  return 0;
}
CUresult cuModuleUnload(void* mod) { return 0; }

CUresult cuModuleGetFunction(void** fn, void* mod, const char* name) {
  Module* m = (Module*)mod;
  char pat[160];
  snprintf(pat, sizeof(pat), ".entry %s(", name);
  const char* at = strstr(m->text, pat);
  if (!at) return 500;  // CUDA_ERROR_NOT_FOUND
  Function* f = (Function*)calloc(1, sizeof(Function));
  snprintf(f->name, sizeof(f->name), "%s", name);
  const char* end = strchr(at, ')');
  int off = 0, k = 0;
  for (const char* p = strstr(at, ".param"); p && p < end; p = strstr(p + 1, ".param")) {
    const char* t = p + 7;  // after ".param "
    int size = strncmp(t, ".u64", 4) == 0 || strncmp(t, ".b64", 4) == 0 ? 8 : 4;
    off = (off + size - 1) / size * size + size;
    f->kinds[k++] = size == 8 ? 'p' : strncmp(t, ".f32", 4) == 0 ? 'f' : 'i';
  }
  f->kinds[k] = 0;
  f->param_bytes = off;
  *fn = f;
  return 0;
}
CUresult cuFuncSetAttribute(void* fn, int attr, int v) { return 0; }

CUresult cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void* stream, void** params, void** extra) {
  Function* f = (Function*)fn;
  launches++;
  if (params != NULL) violation("%s: kernelParams given", f->name);
  if (!extra || (uint64_t)extra[0] != 1 || (uint64_t)extra[2] != 2 || (uint64_t)extra[4] != 0) {
    violation("%s: malformed extra array", f->name);
    return 1;
  }
  const unsigned char* buf = (const unsigned char*)extra[1];
  size_t size = *(size_t*)extra[3];
  if ((int)size != f->param_bytes) {
    violation("%s: argument buffer %ld bytes, kernel takes %d", f->name, (long)size, f->param_bytes);
    return 1;
  }
  if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535) {
    violation("%s: bad grid %u x %u x %u", f->name, gx, gy, gz);
  }
  if (bx * by * bz == 0 || bx * by * bz > 1024 || (bx * by * bz) % 32 != 0) {
    violation("%s: bad block of %u threads", f->name, bx * by * bz);
  }
  if (shared > 48 * 1024) violation("%s: %u bytes of dynamic shared memory", f->name, shared);
  int a = issue(agent_of(stream));
  int off = 0;
  for (int i = 0; f->kinds[i]; i++) {
    int size = f->kinds[i] == 'p' ? 8 : 4;
    off = (off + size - 1) / size * size;
    if (f->kinds[i] == 'p') {
      uint64_t p;
      memcpy(&p, buf + off, 8);
      if (p != 0 && !inside_alloc(p)) violation("%s: pointer argument %d = %lx outside allocations", f->name, i, (unsigned long)p);
      // what a kernel reads or writes is unknown here: every pointer counts as a write
      if (p != 0) access_mem(f->name, p, a, 1);
    }
    off += size;
  }
#ifdef TUNE_EMU
  if (emu_run(f->name, buf, gx, gy, gz, bx, by, bz, shared) != 0) {
    violation("%s: no emulated kernel of that name", f->name);
    return 500;
  }
#endif
  return 0;
}

static const char* cu_name(int e) {
  switch (e) {
    case 0: return "CUDA_SUCCESS";
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 201: return "CUDA_ERROR_INVALID_CONTEXT";
    case 218: return "CUDA_ERROR_INVALID_PTX";
    case 500: return "CUDA_ERROR_NOT_FOUND";
    default: return "CUDA_ERROR_UNKNOWN";
  }
}
CUresult cuGetErrorName(int e, const char** s) { *s = cu_name(e); return 0; }
CUresult cuGetErrorString(int e, const char** s) { *s = "fake driver error"; return 0; }

// ---- cuBLASLt --------------------------------------------------------------------------

typedef struct {
  int type;
  uint64_t rows, cols;
  int64_t ld;
  int batch;
  int64_t stride;
} Layout;
typedef struct {
  int compute, scale, transa, transb;
} Desc;

int cublasLtCreate(void** h) { *h = (void*)0x2000; return 0; }
int cublasLtDestroy(void* h) { return 0; }
size_t cublasLtGetVersion(void) { return 130000; }
const char* cublasLtGetStatusName(int s) {
  return s == 0 ? "CUBLAS_STATUS_SUCCESS" : s == 7 ? "CUBLAS_STATUS_INVALID_VALUE"
                                                   : s == 15 ? "CUBLAS_STATUS_NOT_SUPPORTED"
                                                             : "CUBLAS_STATUS_INTERNAL_ERROR";
}
const char* cublasLtGetStatusString(int s) { return "fake cuBLASLt status"; }

int cublasLtMatmulDescCreate(Desc** d, int compute, int scale) {
  if ((compute != 68 && compute != 77) || scale != 0) return 7;
  *d = (Desc*)calloc(1, sizeof(Desc));
  (*d)->compute = compute;
  (*d)->scale = scale;
  return 0;
}
int cublasLtMatmulDescDestroy(Desc* d) { free(d); return 0; }
int cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t size) {
  if ((attr == 3 || attr == 4) && size == 4) {
    int v = *(const int*)buf;
    if (v != 0 && v != 1) return 7;
    if (attr == 3) d->transa = v; else d->transb = v;
    return 0;
  }
  return 7;
}
int cublasLtMatrixLayoutCreate(Layout** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if ((type != 0 && type != 14) || ld < (int64_t)rows || rows == 0 || cols == 0) return 7;
  *l = (Layout*)calloc(1, sizeof(Layout));
  (*l)->type = type;
  (*l)->rows = rows;
  (*l)->cols = cols;
  (*l)->ld = ld;
  (*l)->batch = 1;
  return 0;
}
int cublasLtMatrixLayoutDestroy(Layout* l) { free(l); return 0; }
int cublasLtMatrixLayoutSetAttribute(Layout* l, int attr, const void* buf, size_t size) {
  if (attr == 5 && size == 4) { l->batch = *(const int*)buf; return 0; }
  if (attr == 6 && size == 8) { l->stride = *(const int64_t*)buf; return 0; }
  return 7;
}
// The preference remembers the smallest operand alignment it was told about: like a strict
// library, the heuristic below offers no algorithm under 16 bytes (the backend then runs
// on aligned copies).
typedef struct {
  uint32_t min_align;
} Pref;
int cublasLtMatmulPreferenceCreate(Pref** p) {
  *p = (Pref*)malloc(sizeof(Pref));
  (*p)->min_align = 256;
  return 0;
}
int cublasLtMatmulPreferenceDestroy(Pref* p) { free(p); return 0; }
int cublasLtMatmulPreferenceSetAttribute(Pref* p, int attr, const void* buf, size_t size) {
  if (attr == 1 && size == 8) return 0;
  if (attr >= 5 && attr <= 8 && size == 4) {
    uint32_t a = *(const uint32_t*)buf;
    if ((a & (a - 1)) != 0 || a < 1 || a > 256) return 7;
    if (a < p->min_align) p->min_align = a;
    return 0;
  }
  return 7;
}

static void op_dims(const Layout* l, int trans, uint64_t* r, uint64_t* c) {
  *r = trans ? l->cols : l->rows;
  *c = trans ? l->rows : l->cols;
}

int cublasLtMatmulAlgoGetHeuristic(void* h, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dd,
                                   Pref* pref, int req, unsigned char* results, int* count) {
  uint64_t am, ak, bk, bn;
  op_dims(a, d->transa, &am, &ak);
  op_dims(b, d->transb, &bk, &bn);
  if (ak != bk || c->rows != am || c->cols != bn || dd->rows != c->rows || dd->cols != c->cols) return 7;
  if (a->type != b->type || c->type != dd->type || (a->type == 0 && c->type != 0)) return 15;
  if (a->batch != b->batch || a->batch != c->batch) return 7;
  memset(results, 0, 96);
  *count = pref->min_align >= 16 ? 1 : 0;
  return 0;
}

static float ld_el(const void* p, int type, int64_t i) {
  if (type == 14) {
    uint32_t bits = (uint32_t)((const uint16_t*)p)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
  }
  return ((const float*)p)[i];
}
static void st_el(void* p, int type, int64_t i, float v) {
  if (type == 14) {
    uint32_t b;
    memcpy(&b, &v, 4);
    ((uint16_t*)p)[i] = (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
  } else {
    ((float*)p)[i] = v;
  }
}

// Every element of a (batched) matrix lies inside one live allocation.
static int matrix_inside(uint64_t p, const Layout* l) {
  int64_t elem = l->type == 14 ? 2 : 4;
  int64_t last = (int64_t)(l->rows - 1) + (int64_t)(l->cols - 1) * l->ld +
                 (int64_t)(l->batch - 1) * l->stride;
  for (int i = 0; i < n_allocs; i++) {
    if (p >= allocs[i].start && p + (last + 1) * elem <= allocs[i].end) return 1;
  }
  return 0;
}

int cublasLtMatmul(void* h, Desc* d, const float* alpha, uint64_t A, Layout* a, uint64_t B,
                   Layout* b, const float* beta, uint64_t C, Layout* c, uint64_t D, Layout* dd,
                   const void* algo, uint64_t ws, size_t wsSize, void* stream) {
  uint64_t m, k, k2, n;
  op_dims(a, d->transa, &m, &k);
  op_dims(b, d->transb, &k2, &n);
  if (k != k2 || C != D) return 7;
  if (!matrix_inside(A, a) || !matrix_inside(B, b) || !matrix_inside(D, dd) || !inside_alloc(ws)) {
    violation("cublasLtMatmul: a matrix reaches outside its allocation (m=%lu n=%lu)", (unsigned long)m, (unsigned long)n);
    return 7;
  }
  int ag = issue(agent_of(stream));
  access_mem("cublasLtMatmul A", A, ag, 0);
  access_mem("cublasLtMatmul B", B, ag, 0);
  access_mem("cublasLtMatmul D", D, ag, 1);
  access_mem("cublasLtMatmul workspace", ws, ag, 1);
  for (int bt = 0; bt < a->batch; bt++) {
    for (uint64_t i = 0; i < m; i++) {
      for (uint64_t j = 0; j < n; j++) {
        double acc = 0;
        for (uint64_t x = 0; x < k; x++) {
          int64_t ia = d->transa ? x + i * a->ld : i + x * a->ld;
          int64_t ib = d->transb ? j + x * b->ld : x + j * b->ld;
          acc += (double)ld_el((void*)A, a->type, ia + bt * a->stride) *
                 ld_el((void*)B, b->type, ib + bt * b->stride);
        }
        int64_t ic = i + j * c->ld + bt * c->stride;
        float prev = *beta != 0 ? ld_el((void*)C, c->type, ic) : 0.0f;
        st_el((void*)D, dd->type, ic, (float)(*alpha * acc) + *beta * prev);
      }
    }
  }
  return 0;
}

// ---- NCCL (one rank) -------------------------------------------------------------------

typedef struct {
  char internal[128];
} ncclUniqueId;

int ncclGetVersion(int* v) { *v = 22005; return 0; }
int ncclGetUniqueId(ncclUniqueId* id) {
  for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 7 + 3);
  return 0;
}
// The id arrives by value: every byte must be the one ncclGetUniqueId wrote.
int ncclCommInitRank(void** comm, int nranks, ncclUniqueId id, int rank) {
  for (int i = 0; i < 128; i++) {
    if (id.internal[i] != (char)(i * 7 + 3)) {
      violation("ncclCommInitRank: unique id byte %d is %d", i, id.internal[i]);
      return 4;  // ncclInvalidArgument
    }
  }
  if (nranks != 1 || rank != 0) return 4;
  *comm = (void*)0x3000;
  return 0;
}
int ncclCommDestroy(void* comm) { return 0; }
const char* ncclGetErrorString(int r) { return r == 0 ? "no error" : "invalid argument"; }
static int nccl_elem(int type) {
  return type == 2 || type == 7 ? 4 : type == 6 || type == 9 ? 2 : 0;
}
static int nccl_copy(const char* call, uint64_t s, uint64_t r, size_t count, int type, void* comm,
                     void* st) {
  int e = nccl_elem(type);
  if (e == 0 || comm != (void*)0x3000) return 4;
  if (check_range(call, s, count * e) || check_range(call, r, count * e)) return 4;
  int a = issue(agent_of(st));
  access_mem(call, s, a, 0);
  access_mem(call, r, a, 1);
  memmove((void*)r, (void*)s, count * e);
  return 0;
}
int ncclAllReduce(uint64_t s, uint64_t r, size_t count, int type, int op, void* comm, void* st) {
  return op == 0 || op == 4 ? nccl_copy("ncclAllReduce", s, r, count, type, comm, st) : 4;
}
int ncclReduceScatter(uint64_t s, uint64_t r, size_t count, int type, int op, void* comm, void* st) {
  return op == 0 || op == 4 ? nccl_copy("ncclReduceScatter", s, r, count, type, comm, st) : 4;
}
int ncclAllGather(uint64_t s, uint64_t r, size_t count, int type, void* comm, void* st) {
  return nccl_copy("ncclAllGather", s, r, count, type, comm, st);
}
int ncclBroadcast(uint64_t s, uint64_t r, size_t count, int type, int root, void* comm, void* st) {
  return root == 0 ? nccl_copy("ncclBroadcast", s, r, count, type, comm, st) : 4;
}
int ncclGroupStart(void) { return 0; }
int ncclGroupEnd(void) { return 0; }

#ifdef __cplusplus
}  // extern "C"
#endif
