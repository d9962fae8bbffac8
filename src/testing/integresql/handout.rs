//! Handing test databases out and taking them back: `GET …/tests`, unlock and recreate, the
//! workers that keep clones ready, and the limit across templates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::pool::{DatabaseConfig, Refusal, Service, Status, Template, gone, refuse, unknown};
use crate::platform::random;

impl Service {
    /// `GET /templates/{hash}/tests`: waits until the template is finalized, then hands out a
    /// test database of its own.
    ///
    /// # Errors
    ///
    /// 404 unknown, 410 discarded, 503 not finalized in time, 507 at the limit.
    pub async fn take(&self, hash: &str) -> Result<(u32, DatabaseConfig), Refusal> {
        self.wait_finalized(hash).await?;
        loop {
            let reserved = {
                let mut templates = self.lock();
                let total: usize = templates.values().map(Template::count).sum();
                let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
                if let Status::Discarded(reason) = &template.status {
                    return Err(gone(hash, reason));
                }
                if let Some(id) = template.ready.pop_front() {
                    template.handed.insert(id, Instant::now());
                    let config = self.config(
                        &template.database(id),
                        template.passwords.get(&id).map_or("", String::as_str),
                    );
                    drop(templates);
                    self.refill.notify_waiters();
                    return Ok((id, config));
                }
                (total < self.settings.max_databases).then(|| reserve(template))
            };
            match reserved {
                Some(id) => {
                    let config = self.make_test_database(hash, id).await?;
                    let discarded = {
                        let mut templates = self.lock();
                        let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
                        template.creating -= 1;
                        if let Status::Discarded(reason) = &template.status {
                            Some(gone(hash, reason))
                        } else {
                            template.handed.insert(id, Instant::now());
                            None
                        }
                    };
                    if let Some(refusal) = discarded {
                        self.drop_database(&config.database).await;
                        return Err(refusal);
                    }
                    self.refill.notify_waiters();
                    return Ok((id, config));
                }
                None => {
                    if !self.make_room().await? {
                        return Err(refuse(
                            507,
                            format!(
                                "all {} test databases (--max-databases) are in use: give back \
                                 the ones no test uses (POST …/tests/{{id}}/unlock), close their \
                                 connections, or raise --max-databases",
                                self.settings.max_databases
                            ),
                        ));
                    }
                }
            }
        }
    }

    async fn wait_finalized(&self, hash: &str) -> Result<(), Refusal> {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let waited = self.wait_finalized_counted(hash).await;
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        waited
    }

    async fn wait_finalized_counted(&self, hash: &str) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + self.settings.finalize_wait;
        loop {
            let changed = self.changed.notified();
            if self.stopping() {
                return Err(refuse(503, "testdb serve is stopping"));
            }
            {
                let templates = self.lock();
                let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
                match &template.status {
                    Status::Finalized => return Ok(()),
                    Status::Discarded(reason) => {
                        return Err(gone(hash, reason));
                    }
                    Status::Initializing(_) => {}
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(refuse(
                    503,
                    format!(
                        "template {hash} was not finalized within {} s: its initializer has not \
                         sent PUT /api/v1/templates/{hash}",
                        self.settings.finalize_wait.as_secs()
                    ),
                ));
            }
        }
    }

    /// At the limit: drops a ready database, else the oldest handed-out one nobody is
    /// connected to (a finished test's). Whether there is room now.
    async fn make_room(&self) -> Result<bool, Refusal> {
        let ready = {
            let mut templates = self.lock();
            templates.values_mut().find_map(|template| {
                let id = template.ready.pop_back()?;
                template.passwords.remove(&id);
                Some(template.database(id))
            })
        };
        if let Some(name) = ready {
            self.drop_database(&name).await;
            return Ok(true);
        }
        let mut handed: Vec<(Instant, String, u32, String)> = self
            .lock()
            .iter()
            .flat_map(|(hash, template)| {
                template
                    .handed
                    .iter()
                    .map(|(id, at)| (*at, hash.clone(), *id, template.database(*id)))
            })
            .collect();
        handed.sort();
        let names: Vec<String> = handed.iter().map(|(.., name)| name.clone()).collect();
        let connected: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        for (_, hash, id, name) in handed {
            if connected.contains(&name) {
                continue;
            }
            let removed = self.lock().get_mut(&hash).is_some_and(|template| {
                template.passwords.remove(&id);
                template.handed.remove(&id).is_some()
            });
            if removed {
                self.drop_database(&name).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes test database `id` of `hash` (reserved: counted in `creating`).
    async fn make_test_database(&self, hash: &str, id: u32) -> Result<DatabaseConfig, Refusal> {
        let (template, name) = {
            let templates = self.lock();
            let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
            (template.name.clone(), template.database(id))
        };
        let password = random::alphanumeric(24).map_err(|error| refuse(500, error.to_string()))?;
        if let Err(error) = self.clone_template(&template, &name, &password).await {
            self.drop_database(&name).await;
            if let Some(template) = self.lock().get_mut(hash) {
                template.creating -= 1;
            }
            return Err(error.into());
        }
        if let Some(template) = self.lock().get_mut(hash) {
            template.passwords.insert(id, password.clone());
        }
        Ok(self.config(&name, &password))
    }

    /// `POST …/tests/{id}/unlock` (and the deprecated `DELETE …/tests/{id}`): an unmodified
    /// database back to the ready ones, handed out next.
    ///
    /// # Errors
    ///
    /// 404 unknown hash or id, 423 while connections are open on it.
    pub async fn unlock(&self, hash: &str, id: u32) -> Result<(), Refusal> {
        self.take_back(hash, id, |template| template.ready.push_front(id))
            .await
            .map(drop)
    }

    /// `POST …/tests/{id}/recreate`: the database made again from the template, then ready.
    ///
    /// # Errors
    ///
    /// As [`Service::unlock`].
    pub async fn recreate(self: &Arc<Self>, hash: &str, id: u32) -> Result<(), Refusal> {
        let name = self
            .take_back(hash, id, |template| {
                template.passwords.remove(&id);
                template.creating += 1;
            })
            .await?;
        let service = Arc::clone(self);
        let hash = hash.to_owned();
        tokio::spawn(async move {
            service.drop_database(&name).await;
            if service.make_test_database(&hash, id).await.is_ok() {
                service.made_ready(&hash, id, &name).await;
            }
        });
        Ok(())
    }

    /// A handed-out database back from its test, once nothing is connected to it: no longer
    /// handed out, then `then` on its template. Its name.
    async fn take_back(
        &self,
        hash: &str,
        id: u32,
        then: impl FnOnce(&mut Template),
    ) -> Result<String, Refusal> {
        let name = self.handed_out(hash, id)?;
        self.refuse_if_connected(&name, hash, id).await?;
        let mut templates = self.lock();
        let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
        if template.handed.remove(&id).is_none() {
            return Err(not_handed_out(hash, id));
        }
        then(template);
        Ok(name)
    }

    fn handed_out(&self, hash: &str, id: u32) -> Result<String, Refusal> {
        let templates = self.lock();
        let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
        if template.handed.contains_key(&id) {
            Ok(template.database(id))
        } else {
            Err(not_handed_out(hash, id))
        }
    }

    /// 423 while connections are open on `name`. A client that has just closed its last one
    /// is given a moment: the server ends a session a little after the client hangs up.
    async fn refuse_if_connected(&self, name: &str, hash: &str, id: u32) -> Result<(), Refusal> {
        let grace = Instant::now() + Duration::from_secs(2);
        loop {
            let sessions: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
            if sessions == 0 {
                return Ok(());
            }
            if Instant::now() > grace {
                return Err(refuse(
                    423,
                    format!(
                        "test database {id} of template {hash} still has {sessions} open \
                         connection(s): close them first"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A database made in the background joins the ready ones, unless its template has gone.
    async fn made_ready(&self, hash: &str, id: u32, name: &str) {
        let kept = {
            let mut templates = self.lock();
            match templates.get_mut(hash) {
                Some(template) if template.database(id) == name => {
                    template.creating -= 1;
                    if matches!(template.status, Status::Finalized) {
                        template.ready.push_back(id);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        };
        if !kept {
            self.drop_database(name).await;
        }
    }

    /// Keeps `ready_per_template` test databases ready per finalized template (one of the two
    /// workers doing so).
    pub(super) async fn keep_ready(self: Arc<Self>) {
        while !self.stopping() {
            // Listening before looking: a take between the two still wakes this.
            let refill = self.refill.notified();
            tokio::pin!(refill);
            refill.as_mut().enable();
            let wanted = {
                let mut templates = self.lock();
                let total: usize = templates.values().map(Template::count).sum();
                let room = total < self.settings.max_databases;
                templates
                    .iter_mut()
                    .find(|(_, template)| {
                        matches!(template.status, Status::Finalized)
                            && template.ready.len() + template.creating
                                < self.settings.ready_per_template
                    })
                    .filter(|_| room)
                    .map(|(hash, template)| {
                        let id = reserve(template);
                        (hash.clone(), id, template.database(id))
                    })
            };
            match wanted {
                Some((hash, id, name)) => match self.make_test_database(&hash, id).await {
                    Ok(_) => self.made_ready(&hash, id, &name).await,
                    Err(refusal) => {
                        // A template discarded meanwhile fails its clone: nothing to report.
                        let still_served = self
                            .lock()
                            .get(&hash)
                            .is_some_and(|template| matches!(template.status, Status::Finalized));
                        if still_served {
                            warn!(detail = refusal.detail, "could not prepare a test database");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                None => refill.await,
            }
        }
    }
}

fn reserve(template: &mut Template) -> u32 {
    let id = template.next_id;
    template.next_id += 1;
    template.creating += 1;
    id
}

fn not_handed_out(hash: &str, id: u32) -> Refusal {
    refuse(
        404,
        format!("test database {id} of template {hash} not found: it is not handed out"),
    )
}
