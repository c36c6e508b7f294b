//! The catalog in memory: titles, their renditions (content files) and subscribers with their
//! plans, so a play reads no database.

use std::collections::HashMap;

use crate::storage::{Storage, StorageError};

pub use oca_protocol::admin::{Content, Subscriber, Title};

/// The catalog and the subscribers in memory, so a play request reads no database: loaded at
/// start, then written through by the admin API after each committed change.
#[derive(Default)]
pub struct CatalogView {
    /// Licensed countries by title id.
    titles: HashMap<String, Vec<String>>,
    /// Renditions by title id, highest resolution first.
    renditions: HashMap<String, Vec<Content>>,
    /// Subscribers by id.
    subscribers: HashMap<String, Subscriber>,
    /// Content by id.
    by_id: HashMap<String, Content>,
}

impl CatalogView {
    /// Reads titles, content and subscribers.
    pub fn load(store: &dyn Storage) -> Result<CatalogView, StorageError> {
        let mut view = CatalogView::default();
        for t in store.titles()? {
            view.add_title(t);
        }
        for c in store.content(None)? {
            view.add_content(c);
        }
        for s in store.subscribers()? {
            view.put_subscriber(s);
        }
        Ok(view)
    }

    /// Records a committed title.
    pub fn add_title(&mut self, t: Title) {
        self.titles.insert(t.id, t.countries);
    }

    /// Records a committed content file.
    pub fn add_content(&mut self, c: Content) {
        self.by_id.insert(c.id.clone(), c.clone());
        let list = self.renditions.entry(c.title.clone()).or_default();
        list.push(c);
        list.sort_by(|x, y| {
            y.resolution
                .cmp(&x.resolution)
                .then(y.bitrate_kbps.cmp(&x.bitrate_kbps))
                .then(x.id.cmp(&y.id))
        });
    }

    /// Records a committed subscriber.
    pub fn put_subscriber(&mut self, s: Subscriber) {
        self.subscribers.insert(s.id.clone(), s);
    }

    /// Forgets a subscriber deleted from storage.
    pub fn remove_subscriber(&mut self, id: &str) {
        self.subscribers.remove(id);
    }

    /// Replaces title `id` with its committed row and renditions, or forgets it when gone.
    pub fn put_title(&mut self, id: &str, row: Option<(Title, Vec<Content>)>) {
        self.remove_title(id);
        if let Some((t, renditions)) = row {
            self.add_title(t);
            for c in renditions {
                self.add_content(c);
            }
        }
    }

    /// One subscriber.
    pub fn subscriber(&self, id: &str) -> Option<&Subscriber> {
        self.subscribers.get(id)
    }

    /// Whether the title exists.
    pub fn title_exists(&self, title: &str) -> bool {
        self.titles.contains_key(title)
    }

    /// Whether `title` may be played in `country`.
    pub fn licensed(&self, title: &str, country: &str) -> bool {
        self.titles
            .get(title)
            .is_some_and(|cs| cs.iter().any(|c| c == country))
    }

    /// Forgets a title removed from the catalog, with its renditions.
    pub fn remove_title(&mut self, title: &str) {
        self.titles.remove(title);
        for c in self.renditions.remove(title).unwrap_or_default() {
            self.by_id.remove(&c.id);
        }
    }

    /// One content file.
    pub fn content(&self, id: &str) -> Option<&Content> {
        self.by_id.get(id)
    }

    /// Every content file.
    pub fn all_content(&self) -> impl Iterator<Item = &Content> {
        self.by_id.values()
    }

    /// The title's renditions, highest resolution first.
    pub fn renditions(&self, title: &str) -> &[Content] {
        self.renditions.get(title).map_or(&[], Vec::as_slice)
    }
}
