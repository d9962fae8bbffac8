//! The desktop shell: a window that shows startup progress, then the web UI served by the
//! in-process API. Everything else is `pgharness::Stack`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use pgharness::Stack;
use pgharness::config::Config;
use pgharness::progress::{Progress, ProgressSink};
use serde::Serialize;
use tauri::menu::{MenuBuilder, SubmenuBuilder};
use tauri::{AppHandle, Manager, RunEvent, State};
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_opener::OpenerExt as _;
use tracing::{error, info, warn};

/// What the startup page shows.
#[derive(Debug, Clone, Serialize)]
struct StartupState {
    step: String,
    percent: Option<f64>,
    failure: Option<String>,
}

struct AppState {
    startup: Mutex<StartupState>,
    stack: tokio::sync::Mutex<Option<Stack>>,
}

impl AppState {
    fn update(&self, change: impl FnOnce(&mut StartupState)) {
        change(&mut self.startup.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

#[tauri::command]
#[expect(
    clippy::needless_pass_by_value,
    reason = "tauri hands a command its state by value"
)]
fn startup_state(state: State<'_, AppState>) -> StartupState {
    state
        .startup
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

#[tauri::command]
fn retry(app: AppHandle) {
    start_stack(app);
}

/// The environment first; otherwise data, logs and a free API port of the app's own, and the
/// `PostgreSQL` binaries the installed package carries (so a first launch needs no download).
fn desktop_config(app: &AppHandle) -> Result<Config, String> {
    let data = app
        .path()
        .app_data_dir()
        .map_err(|error| format!("no application data directory: {error}"))?;
    let bundled = app
        .path()
        .resource_dir()
        .ok()
        .map(|resources| resources.join("postgresql").join("bin"))
        .filter(|bin| bin.join("postgres").is_file());
    let default = move |name: &str| -> Option<String> {
        let path = |leaf: &str| Some(data.join(leaf).display().to_string());
        match name {
            "PGHARNESS_DATA_DIR" => path("data"),
            "PGHARNESS_LOG_DIR" => path("logs"),
            "PGHARNESS_PG_BIN_DIR" => bundled.as_ref().map(|bin| bin.display().to_string()),
            "APP_PORT" => Some("0".to_owned()),
            _ => None,
        }
    };
    Config::from_lookup(|name| std::env::var(name).ok().or_else(|| default(name)))
        .map_err(|error| error.to_string())
}

fn start_stack(app: AppHandle) {
    // On a thread of its own, blocking on tauri's runtime: the start-up future is not `Send`
    // for every lifetime (a rustc limitation with higher-ranked closures), so it cannot be
    // `spawn`ed, while the tasks it spawns (the API) still run on the runtime.
    std::thread::spawn(move || {
        tauri::async_runtime::block_on(async move {
            let state = app.state::<AppState>();
            state.update(|startup| {
                "Starting…".clone_into(&mut startup.step);
                startup.percent = None;
                startup.failure = None;
            });
            let config = match desktop_config(&app) {
                Ok(config) => config,
                Err(reason) => {
                    state.update(|startup| startup.failure = Some(reason));
                    return;
                }
            };
            let reporter = app.clone();
            let progress: ProgressSink = Arc::new(move |event| {
                reporter.state::<AppState>().update(|startup| match event {
                    Progress::Step(message) => {
                        startup.step = message;
                        startup.percent = None;
                    }
                    #[expect(clippy::cast_precision_loss, reason = "a percentage")]
                    Progress::Download {
                        received,
                        total: Some(total),
                    } => startup.percent = Some(received as f64 * 100.0 / total.max(1) as f64),
                    Progress::Download { .. } | Progress::Done => startup.percent = None,
                });
            });
            match Stack::start(config, &progress).await {
                Ok(stack) => {
                    let url = stack.url();
                    if let Some(exposure) = stack.exposure() {
                        warn!("{exposure}");
                    }
                    info!(%url, "pgharness is ready");
                    // The link with the admin token: the window opens the admin screens
                    // without the user ever seeing it.
                    let link = stack
                        .admin_link()
                        .map_or_else(|| format!("{url}/"), str::to_owned);
                    *state.stack.lock().await = Some(stack);
                    show_ui(&app, &link);
                }
                Err(error) => {
                    error!(%error, "pgharness could not start");
                    state.update(|startup| {
                        "Startup failed.".clone_into(&mut startup.step);
                        startup.failure = Some(error.to_string());
                    });
                }
            }
        });
    });
}

fn show_ui(app: &AppHandle, target: &str) {
    if let (Some(window), Ok(url)) = (app.get_webview_window("main"), url::Url::parse(target)) {
        if let Err(error) = window.navigate(url) {
            error!(%error, "cannot show the UI");
        }
    } else {
        error!(target, "no main window to show the UI in");
    }
}

/// Runs a menu action that needs the running stack.
fn with_stack(app: &AppHandle, action: impl FnOnce(&AppHandle, &Stack) + Send + 'static) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let state = app.state::<AppState>();
        let stack = state.stack.lock().await;
        if let Some(stack) = stack.as_ref() {
            action(&app, stack);
        } else {
            info!("pgharness is not running yet");
        }
    });
}

fn on_menu(app: &AppHandle, id: &str) {
    match id {
        "open-data" => with_stack(app, |app, stack| {
            let folder = stack
                .harness()
                .server()
                .map_or_else(PathBuf::new, |server| server.data_dir());
            if let Err(error) = app
                .opener()
                .open_path(folder.display().to_string(), None::<&str>)
            {
                error!(%error, "cannot open the data folder");
            }
        }),
        "copy-url" => with_stack(app, |app, stack| {
            if let Err(error) = app
                .clipboard()
                .write_text(stack.harness().url().expose_url())
            {
                error!(%error, "cannot copy the connection string");
            }
        }),
        "open-browser" => with_stack(app, |app, stack| {
            let link = stack
                .admin_link()
                .map_or_else(|| stack.url(), str::to_owned);
            if let Err(error) = app.opener().open_url(link, None::<&str>) {
                error!(%error, "cannot open the browser");
            }
        }),
        "restart-db" => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let state = app.state::<AppState>();
                let stack = state.stack.lock().await;
                if let Some(server) = stack.as_ref().and_then(|stack| stack.harness().server()) {
                    let restarted = match server.pause().await {
                        Ok(()) => server.resume().await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = restarted {
                        error!(%error, "cannot restart the database");
                    }
                }
            });
        }
        "quit" => app.exit(0),
        _ => {}
    }
}

/// Stops the API, the pool and `PostgreSQL`, in that order, before the process ends.
fn shut_down(app: &AppHandle) {
    let state = app.state::<AppState>();
    let stack = tauri::async_runtime::block_on(async { state.stack.lock().await.take() });
    if let Some(stack) = stack
        && let Err(error) = tauri::async_runtime::block_on(stack.shutdown())
    {
        error!(%error, "pgharness did not stop cleanly");
    }
}

/// Starts the desktop app; exits with status 1 when no window can be opened.
pub fn run() {
    pgharness::telemetry::init("info,sqlx::postgres::notice=warn");
    let app = tauri::Builder::default()
        // First: a second launch focuses this window instead of starting another server.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            if let Some(window) = app.get_webview_window("main") {
                let _ = window.unminimize();
                let _ = window.set_focus();
            }
        }))
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .manage(AppState {
            startup: Mutex::new(StartupState {
                step: "Starting…".to_owned(),
                percent: None,
                failure: None,
            }),
            stack: tokio::sync::Mutex::new(None),
        })
        .invoke_handler(tauri::generate_handler![startup_state, retry])
        .setup(|app| {
            let menu = MenuBuilder::new(app)
                .item(
                    &SubmenuBuilder::new(app, "pgharness")
                        .text("open-data", "Open data folder")
                        .text("copy-url", "Copy connection string (psql)")
                        .text("open-browser", "Open UI in browser")
                        .text("restart-db", "Restart database")
                        .separator()
                        .text("quit", "Quit")
                        .build()?,
                )
                .build()?;
            app.set_menu(menu)?;
            app.on_menu_event(|app, event| on_menu(app, event.id().as_ref()));
            // A plain SIGTERM (or Ctrl-C in the terminal) skips tauri's exit handlers: turn it
            // into a normal exit.
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                if let Ok(shutdown) = pgharness::platform::signals::shutdown_requested() {
                    shutdown.await;
                    handle.exit(0);
                }
            });
            start_stack(app.handle().clone());
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(error) => {
            eprintln!(
                "✗ pgharness cannot open its window: {error}. On Linux it needs a display (X11 or Wayland) and WebKitGTK 4.1."
            );
            std::process::exit(1);
        }
    };
    app.run(|app, event| {
        if let RunEvent::Exit = event {
            shut_down(app);
        }
    });
}
