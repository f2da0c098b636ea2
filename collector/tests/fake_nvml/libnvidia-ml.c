/*
 * A stand-in for NVIDIA's libnvidia-ml.so.1, so the collector's NVML source runs the real
 * nvml-wrapper code path on machines without a GPU (CI). Test code, not shipped.
 *
 * The GPUs it reports are read, at every call, from a file named `nvml-state` in the directory
 * this library was loaded from; a test copies the library into its own temporary directory, so
 * tests running side by side each see their own GPUs. One record per line, fields split by '|':
 *
 *   gpu|NAME|UUID|ENERGY_MJ|POWER_MW|LIMIT_MW|MIN_MW|MAX_MW|MIG
 *       ENERGY_MJ -1: the energy counter is not supported (pre-Volta); MIG 1: MIG mode on.
 *   proc|GPU_INDEX|PID|SM_UTIL|TIMESTAMP_US|MIG_INDEX
 *       a compute process and its latest utilisation sample; MIG_INDEX (optional, -1 = none) is
 *       the MIG device it runs on. Like NVML, utilisation is not reported in MIG mode.
 *   mig|GPU_INDEX|GPU_INSTANCE_ID|SLICES
 *       a MIG device of a GPU.
 *
 * Power limits set through nvmlDeviceSetPowerManagementLimit are kept in `nvml-limits` beside the
 * state (`UUID|LIMIT_MW` per line) and override the state's LIMIT_MW, so a test (or another
 * process) sees what was set. While a file `nvml-readonly` exists there, setting a limit answers
 * NVML_ERROR_NO_PERMISSION, as it does for a process without root.
 *
 * Signatures follow nvml.h (CUDA 12); only what the collector calls is here. nvml-wrapper
 * resolves symbols lazily, so anything missing fails only if called.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 16
#define MAX_PROCS 64
#define MAX_MIGS 7

struct fake_mig {
    unsigned gpu_instance_id;
    unsigned slices;
};

struct fake_gpu {
    char name[96];
    char uuid[96];
    long long energy_mj;
    unsigned power_mw, limit_mw, min_mw, max_mw, mig_mode;
    struct fake_mig migs[MAX_MIGS];
    unsigned mig_count;
};

struct fake_proc {
    unsigned gpu, pid, sm_util;
    unsigned long long timestamp_us;
    int mig;
};

typedef struct fake_gpu *nvmlDevice_t;

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId;
    unsigned computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned pid;
    unsigned long long timeStamp;
    unsigned smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    unsigned multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount,
        sharedJpegCount, sharedOfaCount, gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

static struct fake_gpu gpus[MAX_GPUS];
static unsigned gpu_count;
/* MIG devices are handles too: one per (gpu, mig index), pointing at a gpu-shaped record. */
static struct fake_gpu mig_devices[MAX_GPUS][MAX_MIGS];
static struct fake_proc procs[MAX_PROCS];
static unsigned proc_count;
static int initialised;

static void state_path(char *out, size_t size) {
    Dl_info info;
    char own[4096];
    if (dladdr((void *)&state_path, &info) == 0 || info.dli_fname == NULL) {
        snprintf(out, size, "nvml-state");
        return;
    }
    snprintf(own, sizeof own, "%s", info.dli_fname);
    snprintf(out, size, "%s/nvml-state", dirname(own));
}

static void sibling_path(char *out, size_t size, const char *name) {
    char state[4200];
    state_path(state, sizeof state);
    snprintf(out, size, "%s/%s", dirname(state), name);
}

static char *field(char **cursor) {
    return strsep(cursor, "|\n");
}

static nvmlReturn_t load(void) {
    char path[4200], line[512];
    FILE *file;
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    state_path(path, sizeof path);
    file = fopen(path, "r");
    if (file == NULL) return NVML_ERROR_UNKNOWN;
    gpu_count = 0;
    proc_count = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        char *cursor = line;
        char *kind = field(&cursor);
        if (kind == NULL) continue;
        if (strcmp(kind, "gpu") == 0 && gpu_count < MAX_GPUS) {
            struct fake_gpu *gpu = &gpus[gpu_count++];
            char *f;
            memset(gpu, 0, sizeof *gpu);
            if ((f = field(&cursor))) snprintf(gpu->name, sizeof gpu->name, "%s", f);
            if ((f = field(&cursor))) snprintf(gpu->uuid, sizeof gpu->uuid, "%s", f);
            gpu->energy_mj = (f = field(&cursor)) ? strtoll(f, NULL, 10) : -1;
            gpu->power_mw = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            gpu->limit_mw = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            gpu->min_mw = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            gpu->max_mw = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            gpu->mig_mode = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
        } else if (strcmp(kind, "proc") == 0 && proc_count < MAX_PROCS) {
            struct fake_proc *proc = &procs[proc_count++];
            char *f;
            proc->gpu = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            proc->pid = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            proc->sm_util = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            proc->timestamp_us = (f = field(&cursor)) ? strtoull(f, NULL, 10) : 0;
            proc->mig = (f = field(&cursor)) && *f ? (int)strtol(f, NULL, 10) : -1;
        } else if (strcmp(kind, "mig") == 0) {
            char *f;
            unsigned gpu = (f = field(&cursor)) ? strtoul(f, NULL, 10) : MAX_GPUS;
            if (gpu < gpu_count && gpus[gpu].mig_count < MAX_MIGS) {
                struct fake_mig *mig = &gpus[gpu].migs[gpus[gpu].mig_count++];
                mig->gpu_instance_id = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
                mig->slices = (f = field(&cursor)) ? strtoul(f, NULL, 10) : 0;
            }
        }
    }
    fclose(file);
    /* Limits set earlier override the state's. */
    sibling_path(path, sizeof path, "nvml-limits");
    file = fopen(path, "r");
    if (file != NULL) {
        while (fgets(line, sizeof line, file) != NULL) {
            char *cursor = line;
            char *uuid = field(&cursor);
            char *limit = field(&cursor);
            if (uuid == NULL || limit == NULL) continue;
            for (unsigned g = 0; g < gpu_count; g++)
                if (strcmp(gpus[g].uuid, uuid) == 0) gpus[g].limit_mw = strtoul(limit, NULL, 10);
        }
        fclose(file);
    }
    return NVML_SUCCESS;
}

static int gpu_index(nvmlDevice_t device) {
    for (unsigned i = 0; i < gpu_count; i++)
        if (device == &gpus[i]) return (int)i;
    return -1;
}

/* A handle into `gpus`, reloading the state first; NULL when the handle is not a whole GPU. */
static struct fake_gpu *whole_gpu(nvmlDevice_t device, nvmlReturn_t *status) {
    *status = load();
    if (*status != NVML_SUCCESS) return NULL;
    if (gpu_index(device) < 0) {
        *status = NVML_ERROR_INVALID_ARGUMENT;
        return NULL;
    }
    return device;
}

nvmlReturn_t nvmlInit_v2(void) {
    initialised = 1;
    return load();
}

nvmlReturn_t nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    return nvmlInit_v2();
}

nvmlReturn_t nvmlShutdown(void) {
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    (void)result;
    return "fake NVML error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    if (version == NULL || length < 8) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(version, length, "550.0-fake");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    nvmlReturn_t status = load();
    if (status != NVML_SUCCESS) return status;
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *device) {
    nvmlReturn_t status = load();
    if (status != NVML_SUCCESS) return status;
    if (index >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned *index) {
    nvmlReturn_t status;
    if (!whole_gpu(device, &status)) return status;
    *index = (unsigned)gpu_index(device);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned length) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    if (strlen(gpu->name) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", gpu->name);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned length) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    if (strlen(gpu->uuid) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "%s", gpu->uuid);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    if (gpu->energy_mj < 0) return NVML_ERROR_NOT_SUPPORTED;
    *energy = (unsigned long long)gpu->energy_mj;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned *power) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    *power = gpu->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned *limit) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    *limit = gpu->limit_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned *limit) {
    return nvmlDeviceGetEnforcedPowerLimit(device, limit);
}

nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned limit) {
    char path[4200];
    FILE *file;
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    sibling_path(path, sizeof path, "nvml-readonly");
    if (access(path, F_OK) == 0) return NVML_ERROR_NO_PERMISSION;
    if (limit < gpu->min_mw || limit > gpu->max_mw) return NVML_ERROR_INVALID_ARGUMENT;
    gpu->limit_mw = limit;
    sibling_path(path, sizeof path, "nvml-limits");
    file = fopen(path, "w");
    if (file == NULL) return NVML_ERROR_UNKNOWN;
    for (unsigned g = 0; g < gpu_count; g++) fprintf(file, "%s|%u\n", gpus[g].uuid, gpus[g].limit_mw);
    fclose(file);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned *min,
                                                          unsigned *max) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    *min = gpu->min_mw;
    *max = gpu->max_mw;
    return NVML_SUCCESS;
}

static int mig_position(nvmlDevice_t device, unsigned *gpu) {
    for (unsigned g = 0; g < gpu_count; g++)
        for (unsigned m = 0; m < MAX_MIGS; m++)
            if (device == &mig_devices[g][m] && m < gpus[g].mig_count) {
                *gpu = g;
                return (int)m;
            }
    return -1;
}

/* On a whole GPU: its processes; on a MIG device handle: those running on that instance. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned *count,
                                                     nvmlProcessInfo_t *infos) {
    nvmlReturn_t status = load();
    unsigned found = 0, index = 0;
    int mig = -1;
    if (status != NVML_SUCCESS) return status;
    if (gpu_index(device) >= 0) {
        index = (unsigned)gpu_index(device);
    } else {
        mig = mig_position(device, &index);
        if (mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    }
#define MATCHES(p) ((p).gpu == index && (mig < 0 || (p).mig == mig))
    for (unsigned i = 0; i < proc_count; i++)
        if (MATCHES(procs[i])) found++;
    if (infos == NULL || *count < found) {
        *count = found;
        return found == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = 0;
    for (unsigned i = 0; i < proc_count; i++) {
        if (!MATCHES(procs[i])) continue;
        infos[*count].pid = procs[i].pid;
        infos[*count].usedGpuMemory = 1ULL << 30;
        infos[*count].gpuInstanceId = procs[i].mig < 0 ? 0xFFFFFFFFu : (unsigned)procs[i].mig;
        infos[*count].computeInstanceId = procs[i].mig < 0 ? 0xFFFFFFFFu : 0;
        (*count)++;
    }
#undef MATCHES
    return NVML_SUCCESS;
}

/* Like NVML: samples newer than `last_seen`, NOT_FOUND when there are none. */
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                             nvmlProcessUtilizationSample_t *samples,
                                             unsigned *count, unsigned long long last_seen) {
    nvmlReturn_t status;
    unsigned found = 0, index;
    if (!whole_gpu(device, &status)) return status;
    if (gpus[gpu_index(device)].mig_mode) return NVML_ERROR_NOT_SUPPORTED;
    index = (unsigned)gpu_index(device);
    for (unsigned i = 0; i < proc_count; i++)
        if (procs[i].gpu == index && procs[i].timestamp_us > last_seen) found++;
    if (found == 0) return NVML_ERROR_NOT_FOUND;
    if (samples == NULL || *count < found) {
        *count = found;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = 0;
    for (unsigned i = 0; i < proc_count; i++) {
        if (procs[i].gpu != index || procs[i].timestamp_us <= last_seen) continue;
        memset(&samples[*count], 0, sizeof samples[*count]);
        samples[*count].pid = procs[i].pid;
        samples[*count].timeStamp = procs[i].timestamp_us;
        samples[*count].smUtil = procs[i].sm_util;
        (*count)++;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned *current, unsigned *pending) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    *current = gpu->mig_mode;
    *pending = gpu->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned *count) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    if (!gpu) return status;
    *count = gpu->mig_mode ? MAX_MIGS : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned index,
                                                 nvmlDevice_t *mig) {
    nvmlReturn_t status;
    struct fake_gpu *gpu = whole_gpu(device, &status);
    int parent = gpu_index(device);
    if (!gpu) return status;
    if (!gpu->mig_mode || index >= MAX_MIGS) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= gpu->mig_count) return NVML_ERROR_NOT_FOUND;
    mig_devices[parent][index] = *gpu;
    mig_devices[parent][index].mig_count = index; /* remembers which instance it is */
    *mig = &mig_devices[parent][index];
    return NVML_SUCCESS;
}

static struct fake_mig *mig_of(nvmlDevice_t device) {
    for (unsigned g = 0; g < gpu_count; g++)
        for (unsigned m = 0; m < MAX_MIGS; m++)
            if (device == &mig_devices[g][m] && m < gpus[g].mig_count) return &gpus[g].migs[m];
    return NULL;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned *id) {
    nvmlReturn_t status = load();
    struct fake_mig *mig;
    if (status != NVML_SUCCESS) return status;
    mig = mig_of(device);
    if (mig == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *id = mig->gpu_instance_id;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    nvmlReturn_t status = load();
    struct fake_mig *mig;
    if (status != NVML_SUCCESS) return status;
    memset(attributes, 0, sizeof *attributes);
    mig = mig_of(device);
    if (mig != NULL) {
        attributes->gpuInstanceSliceCount = mig->slices;
        attributes->computeInstanceSliceCount = mig->slices;
        attributes->multiprocessorCount = 16 * mig->slices;
        attributes->memorySizeMB = 10240ULL * mig->slices;
        return NVML_SUCCESS;
    }
    if (gpu_index(device) < 0) return NVML_ERROR_INVALID_ARGUMENT;
    attributes->gpuInstanceSliceCount = 7;
    attributes->computeInstanceSliceCount = 7;
    attributes->multiprocessorCount = 132;
    attributes->memorySizeMB = 81559;
    return NVML_SUCCESS;
}
