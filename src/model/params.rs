//! The parameter registry: each layer asks a prefix-scoped [`Scope`] for its tensors as it is
//! built (as candle-nn's `VarBuilder::pp` does), stating each one's shape and kind. The
//! resulting list is the model's parameter list in transformers' `named_parameters()` order,
//! its weight-decay groups and the names its checkpoints are loaded and saved under, so those
//! cannot drift apart.

use std::cell::RefCell;

use anyhow::Result;
use candle_core::Tensor;

use super::layers::Products;

/// What a parameter is, which decides its weight decay (transformers' `Trainer` exempts every
/// bias and every normalisation layer's parameters, whatever they are called) and how a new
/// one is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A linear layer's weight matrix.
    Weight,
    Bias,
    /// A layer norm's scale or shift.
    Norm,
    /// An embedding table.
    Embedding,
}

impl Kind {
    pub fn decays(self) -> bool {
        matches!(self, Kind::Weight | Kind::Embedding)
    }
}

/// One parameter a layer asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Its full name in transformers' classification model, e.g.
    /// `roberta.encoder.layer.0.attention.self.query.weight`.
    pub name: &'a str,
    pub shape: &'a [usize],
    pub kind: Kind,
    /// Part of the classification head: may be initialised when a base model lacks it.
    pub head: bool,
    /// The config.json fields that set the rows and columns, named in shape errors.
    pub fields: Option<(&'a str, &'a str)>,
}

/// Where parameters come from: a checkpoint, a set of tensors, a random initialiser.
pub trait Source {
    fn tensor(&mut self, request: &Request) -> Result<Tensor>;

    /// Checks that the source has `count` blocks `{prefix}.0` .. `{prefix}.{count-1}` before
    /// any is built, so that a config.json claiming more layers than the weights hold fails
    /// naming `field`.
    fn check_count(&self, _prefix: &str, _count: usize, _field: &str) -> Result<()> {
        Ok(())
    }
}

/// A model's parameter, as registered.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub kind: Kind,
}

impl Param {
    pub fn decays(&self) -> bool {
        self.kind.decays()
    }
}

/// The parameters gathered while a model is built.
pub struct Registry<'s> {
    source: RefCell<&'s mut dyn Source>,
    params: RefCell<Vec<Param>>,
    /// How linear layers multiply.
    products: Products,
}

impl<'s> Registry<'s> {
    pub fn new(source: &'s mut dyn Source) -> Self {
        Self {
            source: RefCell::new(source),
            params: RefCell::new(Vec::new()),
            products: Products::Plain,
        }
    }

    /// Linear layers multiply as `products` says.
    pub fn with_products(mut self, products: Products) -> Self {
        self.products = products;
        self
    }

    /// The scope of the whole model (no prefix).
    pub fn root(&self) -> Scope<'_, 's> {
        Scope {
            registry: self,
            prefix: String::new(),
            head: false,
        }
    }

    pub fn into_params(self) -> Vec<Param> {
        self.params.into_inner()
    }
}

/// A prefix within the model; layers take one and ask for their tensors by local name.
#[derive(Clone)]
pub struct Scope<'r, 's> {
    registry: &'r Registry<'s>,
    prefix: String,
    head: bool,
}

impl<'r, 's> Scope<'r, 's> {
    /// The scope one level down: `pp("encoder")`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            registry: self.registry,
            prefix,
            head: self.head,
        }
    }

    /// The same scope with its parameters marked as the classification head.
    pub fn head(&self) -> Self {
        Self {
            head: true,
            ..self.clone()
        }
    }

    /// How linear layers multiply.
    pub fn products(&self) -> Products {
        self.registry.products
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` of `shape`, registered as a parameter.
    pub fn get(&self, name: &str, shape: &[usize], kind: Kind) -> Result<Tensor> {
        self.request(name, shape, kind, None)
    }

    /// An embedding table of `rows` x `cols`, whose sizes come from the config.json fields
    /// `fields`.
    pub fn embedding(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        fields: (&str, &str),
    ) -> Result<Tensor> {
        self.request(name, &[rows, cols], Kind::Embedding, Some(fields))
    }

    fn request(
        &self,
        name: &str,
        shape: &[usize],
        kind: Kind,
        fields: Option<(&str, &str)>,
    ) -> Result<Tensor> {
        let full = self.full(name);
        let tensor = self.registry.source.borrow_mut().tensor(&Request {
            name: &full,
            shape,
            kind,
            head: self.head,
            fields,
        })?;
        self.registry.params.borrow_mut().push(Param {
            name: full,
            tensor: tensor.clone(),
            kind,
        });
        Ok(tensor)
    }

    /// Fails unless the source has `count` numbered blocks under `name` (see
    /// [`Source::check_count`]).
    pub fn check_count(&self, name: &str, count: usize, field: &str) -> Result<()> {
        self.registry
            .source
            .borrow()
            .check_count(&self.full(name), count, field)
    }
}

/// Tensors by full name, used as they are (the variables of a trainable model, casts of them).
pub struct Tensors<'a>(pub &'a std::collections::HashMap<String, Tensor>);

impl Source for Tensors<'_> {
    fn tensor(&mut self, request: &Request) -> Result<Tensor> {
        let tensor = self
            .0
            .get(request.name)
            .ok_or_else(|| anyhow::anyhow!("missing tensor `{}`", request.name))?;
        if tensor.dims() != request.shape {
            anyhow::bail!(
                "tensor `{}` has shape {:?}, expected {:?}",
                request.name,
                tensor.dims(),
                request.shape
            );
        }
        Ok(tensor.clone())
    }
}
