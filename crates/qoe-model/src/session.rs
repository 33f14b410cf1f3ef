// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime: loading the library (the `ort` crate loads it at run time), the execution
//! providers, and opening a bundle's graphs as sessions checked against the manifest.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;

use crate::bundle::{Bundle, PartName, TensorSpec};
use crate::error::{Error, Result, Words};
use crate::locate;
use crate::runner::{Graphs, LocalGraph};

/// The process's one ONNX Runtime environment, and the library it was loaded from.
static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf)>> = OnceLock::new();

/// The ONNX Runtime library this process runs on, loading it on first use.
pub fn library_path() -> Result<PathBuf> {
    loaded().map(|(_, path)| path.clone())
}

/// The ONNX Runtime environment, loading the library on first use from the first place of
/// [`locate::runtime_places`] that has a library of a version `ort` can use.
pub fn environment() -> Result<&'static Environment> {
    loaded().map(|(environment, _)| environment)
}

fn loaded() -> Result<&'static (Environment, PathBuf)> {
    ENVIRONMENT.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<(Environment, PathBuf)> {
    let (places, mut passed) = locate::runtime_places();
    for place in places {
        match ort::init_from(&place.library) {
            Ok(builder) => {
                return builder
                    .with_name("gst-qoe")
                    .build()
                    .map(|environment| (environment, place.library))
                    .map_err(|e| {
                        Error::Runtime(format!(
                            "cannot start ONNX Runtime from {}: {e}",
                            place.described
                        ))
                    });
            }
            // The error names the file and, for a wrong version, the version found.
            Err(e) => passed.push(format!("{}: {e}", place.described)),
        }
    }
    Err(Error::Runtime(format!(
        "cannot load ONNX Runtime 1.{}+: {}",
        ort::MINOR_VERSION,
        passed.join("; ")
    )))
}

/// How the model's threads (ONNX Runtime's and the element's workers) are scheduled against
/// the watched pipeline's threads. Lowering is always allowed; raising back is not, so a
/// thread is lowered once, when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "glib", derive(glib::Enum))]
#[cfg_attr(feature = "glib", enum_type(name = "GstQoeModelPriority"))]
#[repr(u32)]
pub enum Priority {
    /// [`Priority::Low`] where windows may be dropped (a live monitor: the pipeline comes
    /// first), [`Priority::Normal`] where the pipeline waits for the model anyway (offline
    /// analysis): see [`Priority::resolved`].
    #[default]
    #[cfg_attr(
        feature = "glib",
        enum_value(
            name = "low when windows may be dropped (leaky), else normal",
            nick = "auto"
        )
    )]
    Auto,
    /// As every other thread of the process.
    #[cfg_attr(
        feature = "glib",
        enum_value(name = "Same as the pipeline's threads", nick = "normal")
    )]
    Normal,
    /// `nice` 19: a small share of the CPU when the pipeline wants it.
    #[cfg_attr(feature = "glib", enum_value(name = "nice 19", nick = "low"))]
    Low,
    /// Linux `SCHED_IDLE`: the CPU only when no other thread wants it (nice 19 elsewhere).
    #[cfg_attr(
        feature = "glib",
        enum_value(name = "SCHED_IDLE: only CPU time nobody else wants", nick = "idle")
    )]
    Idle,
}

impl Words for Priority {
    const ALL: &'static [Priority] = &[
        Priority::Auto,
        Priority::Normal,
        Priority::Low,
        Priority::Idle,
    ];

    fn word(self) -> &'static str {
        match self {
            Priority::Auto => "auto",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Idle => "idle",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Priority::parse_as(s, "model priority")
    }
}

impl Priority {
    /// The priority [`Priority::Auto`] stands for: low when the model may drop work
    /// (`leaky`), else normal.
    pub fn resolved(self, leaky: bool) -> Priority {
        match self {
            Priority::Auto if leaky => Priority::Low,
            Priority::Auto => Priority::Normal,
            other => other,
        }
    }

    /// Lowers the calling thread to this priority ([`Priority::Auto`]: resolve it first;
    /// unresolved it leaves the thread as it is). An OS that refuses leaves the thread as it
    /// is (the error says why); the model then merely competes as before.
    pub fn apply_to_current_thread(self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let last = std::io::Error::last_os_error;
            match self {
                Priority::Auto | Priority::Normal => Ok(()),
                Priority::Low => {
                    // SAFETY: plain system calls on the calling thread (a Linux thread id is
                    // a valid PRIO_PROCESS target and affects that thread alone).
                    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
                    match unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) } {
                        0 => Ok(()),
                        _ => Err(last()),
                    }
                }
                Priority::Idle => {
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
                    match unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } {
                        0 => Ok(()),
                        _ => Err(last()),
                    }
                }
            }
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            if matches!(self, Priority::Auto | Priority::Normal) {
                return Ok(());
            }
            // SAFETY: a plain system call; elsewhere nice applies to the whole process, so
            // only the workers' own threads are lowered there in effect (best effort).
            match unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        }
        #[cfg(not(unix))]
        {
            Ok(())
        }
    }
}

/// Spawns ONNX Runtime's intra-op threads already lowered to the model's priority.
struct LoweredThreads(Priority);

impl ort::environment::ThreadManager for LoweredThreads {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        let priority = self.0;
        std::thread::Builder::new()
            .name("qoe-ort".into())
            .spawn(move || {
                let _ = priority.apply_to_current_thread();
                work();
            })
            .map_err(|e| ort::Error::new(format!("cannot start an inference thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        let _ = thread.join();
        Ok(())
    }
}

/// Intra-op threads for `threads` (0: half the cores, at least one, so that the pipeline
/// keeps the rest).
pub fn intra_threads(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// Where inference runs. With the `glib` feature it is also the element's
/// `execution-provider` GObject enum, so the property, the CLI and the runtime share one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "glib", derive(glib::Enum))]
#[cfg_attr(feature = "glib", enum_type(name = "GstQoeExecutionProvider"))]
#[repr(u32)]
pub enum Provider {
    #[default]
    #[cfg_attr(feature = "glib", enum_value(name = "CPU", nick = "cpu"))]
    Cpu,
    #[cfg_attr(
        feature = "glib",
        enum_value(name = "CUDA (an error if it cannot start)", nick = "cuda")
    )]
    Cuda,
    #[cfg_attr(
        feature = "glib",
        enum_value(name = "TensorRT (an error if it cannot start)", nick = "tensorrt")
    )]
    TensorRt,
    /// TensorRT, else CUDA, else CPU: the first that starts.
    #[cfg_attr(
        feature = "glib",
        enum_value(name = "TensorRT, else CUDA, else CPU", nick = "auto")
    )]
    Auto,
    /// A KServe v2 inference server, which the options' `server` names: chosen by that
    /// setting, reported when in use.
    #[cfg_attr(
        feature = "glib",
        enum_value(
            name = "A KServe v2 inference server (inference-server)",
            nick = "server"
        )
    )]
    Server,
}

impl Words for Provider {
    const ALL: &'static [Provider] = &[
        Provider::Cpu,
        Provider::Cuda,
        Provider::TensorRt,
        Provider::Auto,
        Provider::Server,
    ];

    fn word(self) -> &'static str {
        self.as_str()
    }
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::Auto => "auto",
            Provider::Server => "server",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Provider::parse_as(s, "execution provider")
    }
}

/// How sessions are opened: where they run and with how many threads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SessionOptions {
    pub provider: Provider,
    /// Intra-op threads per session; 0: half the cores, at least one ([`intra_threads`]).
    pub threads: usize,
    /// Scheduling of ONNX Runtime's threads (and, by the caller, of its own workers).
    pub priority: Priority,
    /// GPU ordinal for CUDA and TensorRT.
    pub device_id: i32,
    /// Folder for TensorRT engines (a key folder per model, ORT version, GPU and precision
    /// inside); `None`: engines are rebuilt on every start.
    pub tensorrt_cache: Option<PathBuf>,
    /// A KServe v2 inference server (`http://host:port`) that runs every graph; `None`: local
    /// sessions on `provider`.
    pub server: Option<String>,
    /// The longest a call to `server` may take, in milliseconds; 0: [`DEFAULT_SERVER_TIMEOUT_MS`].
    pub server_timeout_ms: u64,
    /// How the streams that share the model batch their decoder prefills (graphs whose part
    /// says `batch`).
    pub batch: crate::batch::BatchOptions,
}

/// The default bound on one call to an inference server.
pub const DEFAULT_SERVER_TIMEOUT_MS: u64 = 5000;

/// Opens graph `name` of `bundle` on `provider`, checking its inputs and outputs against the
/// manifest.
fn open_session(
    bundle: &Bundle,
    name: &PartName,
    provider: Provider,
    options: &SessionOptions,
) -> Result<Session> {
    let part = bundle.part(name)?;
    let path = bundle.path(&part.file);
    // No spinning: a waiting intra-op thread that spins burns the CPU the pipeline needs.
    let mut builder = Session::builder(environment()?)
        .and_then(|b| {
            b.with_intra_threads(intra_threads(options.threads))
                .map_err(Into::into)
        })
        .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
        .and_then(|b| b.with_inter_op_spinning(false).map_err(Into::into))
        .and_then(|b| {
            b.with_thread_manager(LoweredThreads(options.priority))
                .map_err(Into::into)
        })
        .map_err(|e| Error::Runtime(format!("cannot configure ONNX Runtime: {e}")))?;
    builder = with_provider(builder, provider, options, &path)?;
    let session = builder
        .commit_from_file(&path)
        .map_err(|e| Error::Bundle(format!("{}: not a usable ONNX model: {e}", path.display())))?;
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| o.name().to_owned())
            .collect::<Vec<_>>()
    };
    let declared = |specs: &[TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    for (what, got, want) in [
        ("inputs", names(session.inputs()), declared(&part.inputs)),
        ("outputs", names(session.outputs()), declared(&part.outputs)),
    ] {
        if got != want {
            return Err(Error::Bundle(format!(
                "{}: {what} are {got:?}, the manifest declares {want:?}",
                path.display()
            )));
        }
    }
    Ok(session)
}

/// Opens every graph of `bundle` on `provider`.
pub(crate) fn open_sessions(
    bundle: &Bundle,
    provider: Provider,
    options: &SessionOptions,
) -> Result<Graphs> {
    let mut sessions = Graphs::new();
    for name in bundle.manifest.parts.keys() {
        let session = Mutex::new(open_session(bundle, name, provider, options)?);
        sessions.insert(
            name.clone(),
            Box::new(LocalGraph {
                name: name.clone(),
                session,
            }),
        );
    }
    Ok(sessions)
}

/// Opens every graph of `bundle` as `options` say. `auto` tries TensorRT, then CUDA, then the
/// CPU; an explicit provider that cannot start is an error. Returns the provider used.
pub(crate) fn open_all(bundle: &Bundle, options: &SessionOptions) -> Result<(Provider, Graphs)> {
    if let Some(url) = &options.server {
        let timeout = match options.server_timeout_ms {
            0 => DEFAULT_SERVER_TIMEOUT_MS,
            ms => ms,
        };
        let graphs =
            crate::remote::open_all(bundle, url, std::time::Duration::from_millis(timeout))?;
        return Ok((Provider::Server, graphs));
    }
    if options.provider == Provider::Server {
        return Err(Error::Runtime(
            "execution provider server runs graphs on an inference server, but none is set (inference-server, --inference-server)".into(),
        ));
    }
    if options.provider != Provider::Auto {
        return Ok((
            options.provider,
            open_sessions(bundle, options.provider, options)?,
        ));
    }
    let mut why = Vec::new();
    for provider in [Provider::TensorRt, Provider::Cuda, Provider::Cpu] {
        match open_sessions(bundle, provider, options) {
            Ok(sessions) => return Ok((provider, sessions)),
            Err(e) => why.push(format!("{}: {e}", provider.as_str())),
        }
    }
    Err(Error::Runtime(why.join("; ")))
}

/// Adds `provider` to a session builder. Registration failures are errors, never a silent
/// fall back to the CPU.
fn with_provider(
    builder: ort::session::builder::SessionBuilder,
    provider: Provider,
    options: &SessionOptions,
    model: &Path,
) -> Result<ort::session::builder::SessionBuilder> {
    use ort::ep;
    let dispatch = match provider {
        Provider::Cpu | Provider::Auto | Provider::Server => return Ok(builder),
        Provider::Cuda => ep::CUDA::default()
            .with_device_id(options.device_id)
            .build()
            .error_on_failure(),
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_device_id(options.device_id);
            if let Some(root) = &options.tensorrt_cache {
                let dir = root.join(tensorrt_cache_key(model, options.device_id)?);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::Runtime(format!("TensorRT engine cache {}: {e}", dir.display()))
                })?;
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            trt.build().error_on_failure()
        }
    };
    let name = dispatch.name();
    builder
        .with_execution_providers([dispatch])
        .map_err(|e| Error::Runtime(format!("{name} cannot start for {}: {e}", model.display())))
}

/// The TensorRT engine cache folder name for `model`: its content hash, the ONNX Runtime
/// library, the GPU and the precision, so that a change of any of them builds new engines.
pub fn tensorrt_cache_key(model: &Path, device_id: i32) -> Result<String> {
    let bytes =
        std::fs::read(model).map_err(|e| Error::Bundle(format!("{}: {e}", model.display())))?;
    let ort = library_path()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "ort".into());
    let gpu = gpu_name(device_id).unwrap_or_else(|| format!("gpu{device_id}"));
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    };
    Ok(format!(
        "{:016x}_{}_{}_fp32",
        fnv1a(&bytes),
        clean(&ort),
        clean(&gpu)
    ))
}

/// The NVIDIA driver's name for GPU `device_id`, if the driver says.
fn gpu_name(device_id: i32) -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.get(device_id as usize)?.join("information")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Model:"))
        .map(|m| m.trim().to_owned())
}

/// 64-bit FNV-1a: a stable content hash (std's hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_low_only_where_windows_may_be_dropped() {
        assert_eq!(Priority::Auto.resolved(true), Priority::Low);
        assert_eq!(Priority::Auto.resolved(false), Priority::Normal);
        assert_eq!(Priority::Idle.resolved(false), Priority::Idle);
        assert_eq!("low".parse::<Priority>().unwrap(), Priority::Low);
        let err = "lowest".parse::<Priority>().unwrap_err().to_string();
        assert!(err.contains("\"lowest\"") && err.contains("idle"), "{err}");
    }

    #[test]
    fn a_thread_lowers_itself_and_no_other() {
        assert!(intra_threads(0) >= 1);
        assert_eq!(intra_threads(3), 3);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: plain reads of the calling thread's scheduling.
            let nice = || unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            };
            let before = nice();
            let low = std::thread::spawn(move || {
                Priority::Low.apply_to_current_thread().unwrap();
                nice()
            });
            assert_eq!(low.join().unwrap(), 19);
            let idle = std::thread::spawn(|| {
                Priority::Idle.apply_to_current_thread().unwrap();
                unsafe { libc::sched_getscheduler(0) }
            });
            assert_eq!(idle.join().unwrap(), libc::SCHED_IDLE);
            assert_eq!(nice(), before, "the calling thread is untouched");
        }
    }
}
